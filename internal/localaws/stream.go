package localaws

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

const (
	maxStreamName   = 128
	uniqueSuffixLen = 13 // "-" and 12 hex digits
)

// CreateStream creates a provisioned stream through client (kinesis-local or
// kinesalite) and waits until it is ACTIVE. The SDK's waiter polls every 10 s;
// the emulators activate a stream in 50 ms.
func (s *Servers) CreateStream(ctx context.Context, client *kinesis.Client, name string, shards int32) error {
	return createStream(ctx, client, &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(shards)})
}

// CreateOnDemandStream creates an on-demand stream (kinesis-local gives it 4 shards), the kind
// that can place records itself (see AutoDistribution), and waits until it is ACTIVE.
func (s *Servers) CreateOnDemandStream(ctx context.Context, client *kinesis.Client, name string) error {
	return createStream(ctx, client, &kinesis.CreateStreamInput{
		StreamName: aws.String(name), StreamModeDetails: &types.StreamModeDetails{StreamMode: types.StreamModeOnDemand},
	})
}

func createStream(ctx context.Context, client *kinesis.Client, in *kinesis.CreateStreamInput) error {
	name := aws.ToString(in.StreamName)
	_, err := client.CreateStream(ctx, in)
	if err != nil {
		return fmt.Errorf("localaws: create stream %q: %w", name, err)
	}
	ticker := time.NewTicker(probeInterval)
	defer ticker.Stop()
	for {
		out, err := client.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err != nil {
			return fmt.Errorf("localaws: describe stream %q: %w", name, err)
		}
		if out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("localaws: stream %q not active (%s): %w",
				name, out.StreamDescriptionSummary.StreamStatus, ctx.Err())
		case <-ticker.C:
		}
	}
}

// UniqueName returns prefix plus a random suffix, usable as a Kinesis stream
// or DynamoDB table name: characters outside [A-Za-z0-9_.-] become '-' (so a
// test name with subtests can serve as prefix) and the prefix is shortened to
// keep the name within 128 characters.
func UniqueName(prefix string) string {
	p := strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '_', r == '.', r == '-':
			return r
		}
		return '-'
	}, prefix)
	if len(p) > maxStreamName-uniqueSuffixLen {
		p = p[:maxStreamName-uniqueSuffixLen]
	}
	// 48 random bits keep collisions negligible among a test run's names.
	return fmt.Sprintf("%s-%012x", p, rand.Uint64()>>16)
}
