package shardmap

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
)

// emulatorStream creates a stream on the named emulator and returns its client.
func emulatorStream(t *testing.T, server string, shards int32) (*kinesis.Client, string) {
	t.Helper()
	srv := localaws.Get(t)
	if server == "kinesis-local" {
		return srv.KinesisClient(), localaws.NewStream(t, shards)
	}
	client := srv.KinesaliteClient()
	name := localaws.UniqueName(t.Name())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, srv.CreateStream(ctx, client, name, shards))
	return client, name
}

// requirePlacementPredicted puts records with random partition keys, and some with explicit hash
// keys, and checks that each lands on the shard the map predicts.
func requirePlacementPredicted(t *testing.T, client *kinesis.Client, stream string, m *Map) {
	t.Helper()
	for i := range 40 {
		in := &kinesis.PutRecordInput{
			StreamName: aws.String(stream), Data: []byte("x"), PartitionKey: aws.String("key-" + strconv.Itoa(rand.Int())),
		}
		want := KeyOf(*in.PartitionKey)
		if i%4 == 0 {
			want = Key{Hi: rand.Uint64(), Lo: rand.Uint64()}
			in.ExplicitHashKey = aws.String(want.String())
		}
		out, err := client.PutRecord(t.Context(), in)
		require.NoError(t, err)
		s, ok := m.Find(want)
		require.True(t, ok)
		assert.Equal(t, s.ID, aws.ToString(out.ShardId), "key %s", *in.PartitionKey)
	}
}

func TestMapPredictsWhereTheEmulatorsPutRecords(t *testing.T) {
	t.Parallel()
	for _, server := range []string{"kinesis-local", "kinesalite"} {
		t.Run(server, func(t *testing.T) {
			t.Parallel()
			client, stream := emulatorStream(t, server, 4)
			m, err := Load(t.Context(), client, stream)
			require.NoError(t, err)
			require.Equal(t, 4, m.Len())
			requirePlacementPredicted(t, client, stream, m)

			// Split the first shard at its middle: the map must drop it and hold both children.
			first := m.shards[0]
			mid := Key{Hi: first.End.Hi / 2, Lo: 0}
			_, err = client.SplitShard(t.Context(), &kinesis.SplitShardInput{
				StreamName: aws.String(stream), ShardToSplit: aws.String(first.ID), NewStartingHashKey: aws.String(mid.String()),
			})
			require.NoError(t, err)
			waitActive(t, client, stream)
			after, err := Load(t.Context(), client, stream)
			require.NoError(t, err)
			require.Equal(t, 5, after.Len())
			for _, s := range after.shards {
				assert.NotEqual(t, first.ID, s.ID, "the split shard is closed")
			}
			requirePlacementPredicted(t, client, stream, after)
		})
	}
}

func waitActive(t *testing.T, client *kinesis.Client, stream string) {
	t.Helper()
	testwait.Eventually(t, func() bool {
		out, err := client.DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
		return err == nil && out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive
	}, 30*time.Second, 20*time.Millisecond)
}
