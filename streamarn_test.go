package kinesis

import (
	"bytes"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

// streamNaming watches, at the SDK boundary, how each Kinesis request names a stream: by
// "StreamName" or by "StreamARN" in its JSON body.
type streamNaming struct {
	next aws.HTTPClient

	mu     sync.Mutex
	byName map[string]int // operation → requests naming the stream by name
	byARN  map[string]int
}

func newStreamNaming(next aws.HTTPClient) *streamNaming {
	return &streamNaming{next: next, byName: map[string]int{}, byARN: map[string]int{}}
}

func (s *streamNaming) Do(req *http.Request) (*http.Response, error) {
	op := req.Header.Get("X-Amz-Target")
	op = op[strings.LastIndexByte(op, '.')+1:]
	if req.Body != nil && strings.HasPrefix(req.Header.Get("X-Amz-Target"), "Kinesis_") {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		_ = req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
		s.mu.Lock()
		if bytes.Contains(body, []byte(`"StreamName"`)) {
			s.byName[op]++
		}
		if bytes.Contains(body, []byte(`"StreamARN"`)) {
			s.byARN[op]++
		}
		s.mu.Unlock()
	}
	return s.next.Do(req)
}

func (s *streamNaming) counts() (byName, byARN map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.byName), maps.Clone(s.byARN)
}

func streamARN(t *testing.T, client *kinesis.Client, stream string) string {
	t.Helper()
	out, err := client.DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
	require.NoError(t, err)
	return aws.ToString(out.StreamDescriptionSummary.StreamARN)
}

// TestStreamARNOnlyComponentsNameTheStreamByARN: a component that gives only streamARN (a stream of
// another account can be reached no other way) writes and reads in both modes, and none of its
// Kinesis requests names the stream by name.
func TestStreamARNOnlyComponentsNameTheStreamByARN(t *testing.T) {
	for _, mode := range []consumerMode{modeShared, modeExtended} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			stream := localaws.NewStream(t, 2)
			client := localaws.Get(t).KinesisClient()
			props := withConsumer(localProps(t, stream), mode)
			delete(props, "streamName")
			props["streamARN"] = streamARN(t, client, stream)
			props["initialPosition"] = "TRIM_HORIZON"
			props["shardSyncInterval"] = "200ms"

			var naming *streamNaming
			watch := func(b *AWSKinesis) {
				if fix, ok := b.sdkHTTPClient.(*fanoutFixClient); ok {
					naming = newStreamNaming(fix.next)
					fix.next = naming // SubscribeToShard names the consumer, not the stream
					return
				}
				naming = newStreamNaming(awshttp.NewBuildableClient())
				b.sdkHTTPClient = naming
			}
			b := newBinding(t, props, append(withFanoutFix(mode), watch)...)

			resp, err := create(t.Context(), b, []byte("by-arn"), map[string]string{reqPartitionKey: "k"})
			require.NoError(t, err)
			assert.NotEmpty(t, resp.Metadata[respSequenceNumber])
			rec := newRecorder()
			require.NoError(t, b.Read(t.Context(), rec.handle))
			sent, err := putLanes(t.Context(), client, stream, "arn", 4, 0, 5)
			require.NoError(t, err)
			rec.waitFor(t, append(sent, "by-arn"), 60*time.Second)

			byName, byARN := naming.counts()
			assert.Empty(t, byName, "no request names the stream by name")
			for _, op := range []string{"PutRecords", "DescribeStreamSummary", "ListShards"} {
				assert.Positive(t, byARN[op], "%s names the stream by ARN: %v", op, byARN)
			}
			if mode == modeShared {
				assert.Positive(t, byARN["GetShardIterator"], "%v", byARN)
			} else {
				assert.Positive(t, byARN["RegisterStreamConsumer"]+byARN["DescribeStreamConsumer"], "%v", byARN)
			}
		})
	}
}

func TestWithStreamARNLeavesOtherStreamsAndTheCallersInputAlone(t *testing.T) {
	const arn = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
	in := &kinesis.PutRecordInput{StreamName: aws.String("orders"), PartitionKey: aws.String("k")}
	out, ok := withStreamARN(in, "orders", arn)
	require.True(t, ok)
	byARN, isPut := out.(*kinesis.PutRecordInput)
	require.True(t, isPut)
	assert.Nil(t, byARN.StreamName)
	assert.Equal(t, arn, aws.ToString(byARN.StreamARN))
	assert.Equal(t, "k", aws.ToString(byARN.PartitionKey), "the rest of the input is kept")
	assert.Equal(t, "orders", aws.ToString(in.StreamName), "the caller's input is not changed")

	for name, params := range map[string]any{
		"the dead-letter stream":  &kinesis.PutRecordInput{StreamName: aws.String("orders-dead")},
		"already by ARN":          &kinesis.PutRecordInput{StreamARN: aws.String(arn)},
		"a page of ListShards":    &kinesis.ListShardsInput{NextToken: aws.String("t")},
		"no stream at all":        &kinesis.DescribeStreamConsumerInput{ConsumerARN: aws.String(arn + "/consumer/c:1")},
		"not a pointer to struct": "orders",
	} {
		_, ok := withStreamARN(params, "orders", arn)
		assert.False(t, ok, name)
	}
}
