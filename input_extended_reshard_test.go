package kinesis

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
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

// Resharding in extended mode. kinesis-local never signals the end of a closed shard over fan-out
// (its events keep a continuation sequence number and no child shards), so the end cannot be
// tested end to end. shardEndFake stands in at the SDK boundary instead: it answers each
// SubscribeToShard call for a closed shard as AWS does, with the shard's records from the requested
// position (read from kinesis-local) in an event without a continuation sequence number and with
// the shard's children, and then ends the stream. Open shards are left to kinesis-local.
type shardEndFake struct {
	client *kinesis.Client // plain, straight to kinesis-local
	stream string

	mu       sync.Mutex
	closed   map[string][]types.ChildShard // closed shard → its children
	answered map[string]int
}

func newShardEndFake(t testing.TB, stream string) *shardEndFake {
	return &shardEndFake{client: localaws.Get(t).KinesisClient(), stream: stream, answered: map[string]int{}}
}

// learn lists the stream and remembers which shards are closed and their children.
func (f *shardEndFake) learn(t testing.TB) {
	out, err := f.client.ListShards(t.Context(), &kinesis.ListShardsInput{StreamName: aws.String(f.stream)})
	require.NoError(t, err)
	closed := map[string][]types.ChildShard{}
	for _, s := range out.Shards {
		if s.SequenceNumberRange.EndingSequenceNumber != nil {
			closed[aws.ToString(s.ShardId)] = []types.ChildShard{}
		}
	}
	for _, s := range out.Shards {
		for _, p := range []*string{s.ParentShardId, s.AdjacentParentShardId} {
			if children, ok := closed[aws.ToString(p)]; ok {
				var parents []string
				for _, pp := range []*string{s.ParentShardId, s.AdjacentParentShardId} {
					if pp != nil {
						parents = append(parents, *pp)
					}
				}
				closed[aws.ToString(p)] = append(children, types.ChildShard{ShardId: s.ShardId, ParentShards: parents, HashKeyRange: s.HashKeyRange})
			}
		}
	}
	f.mu.Lock()
	f.closed = closed
	f.mu.Unlock()
}

func (f *shardEndFake) answeredFor(shardID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.answered[shardID]
}

// subscribe is the fanoutFixClient hook.
func (f *shardEndFake) subscribe(req *http.Request) *http.Response {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil
	}
	var in struct {
		ShardId          string
		StartingPosition struct {
			Type           types.ShardIteratorType
			SequenceNumber *string
			Timestamp      *float64
		}
	}
	if err = json.Unmarshal(body, &in); err != nil {
		panic(err)
	}
	f.mu.Lock()
	children, closed := f.closed[in.ShardId]
	if closed {
		f.answered[in.ShardId]++
	}
	f.mu.Unlock()
	if !closed {
		req.Body = io.NopCloser(strings.NewReader(string(body)))
		return nil
	}

	iter := &kinesis.GetShardIteratorInput{
		StreamName: aws.String(f.stream), ShardId: aws.String(in.ShardId),
		ShardIteratorType: in.StartingPosition.Type, StartingSequenceNumber: in.StartingPosition.SequenceNumber,
	}
	if ts := in.StartingPosition.Timestamp; ts != nil {
		iter.Timestamp = aws.Time(time.UnixMilli(int64(*ts * 1000)))
	}
	it, err := f.client.GetShardIterator(req.Context(), iter)
	if err != nil {
		panic(err)
	}
	type record struct {
		SequenceNumber              string
		ApproximateArrivalTimestamp float64
		Data                        []byte
		PartitionKey                string
	}
	var records []record
	for next := it.ShardIterator; next != nil; {
		out, getErr := f.client.GetRecords(req.Context(), &kinesis.GetRecordsInput{ShardIterator: next})
		if getErr != nil {
			panic(getErr)
		}
		for _, r := range out.Records {
			records = append(records, record{
				SequenceNumber:              aws.ToString(r.SequenceNumber),
				ApproximateArrivalTimestamp: float64(r.ApproximateArrivalTimestamp.UnixMilli()) / 1000,
				Data:                        r.Data,
				PartitionKey:                aws.ToString(r.PartitionKey),
			})
		}
		if len(out.Records) == 0 {
			break
		}
		next = out.NextShardIterator
	}
	event, err := json.Marshal(map[string]any{
		"Records":            records,
		"MillisBehindLatest": 0,
		"ChildShards":        children, // no ContinuationSequenceNumber: the shard has ended
	})
	if err != nil {
		panic(err)
	}
	stream := eventFrame("SubscribeToShardEvent", event)
	return &http.Response{
		StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": []string{"application/vnd.amazon.eventstream"}},
		Body:    io.NopCloser(strings.NewReader(string(stream))),
		Request: req,
	}
}

// TestExtendedResharding splits the stream's one shard, then merges the two children: every record
// must be delivered, each parent read to its end before its children, so that each partition
// key's records arrive in put order across the generations.
func TestExtendedResharding(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	client := localaws.Get(t).KinesisClient()
	ctx := t.Context()

	sent, err := putLanes(ctx, client, stream, "g", faultLanes, 0, 5)
	require.NoError(t, err)
	_, err = client.SplitShard(ctx, &kinesis.SplitShardInput{
		StreamName: aws.String(stream), ShardToSplit: aws.String("shardId-000000000000"),
		NewStartingHashKey: aws.String(hashKeyOf(1, 2)),
	})
	require.NoError(t, err)
	waitStreamActive(t, client, stream)
	more, err := putLanes(ctx, client, stream, "g", faultLanes, 5, 10)
	require.NoError(t, err)
	sent = append(sent, more...)
	_, err = client.MergeShards(ctx, &kinesis.MergeShardsInput{
		StreamName: aws.String(stream), ShardToMerge: aws.String("shardId-000000000001"),
		AdjacentShardToMerge: aws.String("shardId-000000000002"),
	})
	require.NoError(t, err)
	waitStreamActive(t, client, stream)
	more, err = putLanes(ctx, client, stream, "g", faultLanes, 10, 15)
	require.NoError(t, err)
	sent = append(sent, more...)

	fake := newShardEndFake(t, stream)
	fake.learn(t)
	fix := newFanoutFixClient()
	fix.subscribe = fake.subscribe
	b := newBinding(t, extendedProps(t, stream), func(b *AWSKinesis) { b.sdkHTTPClient = fix })
	rec := newRecorder()
	require.NoError(t, b.Read(ctx, rec.handle))
	rec.waitFor(t, sent, extendedTimeout)

	res := checkAtLeastOnce(t, sent, rec.deliveries())
	assert.Zero(t, res.duplicates)
	for _, parent := range []string{"shardId-000000000000", "shardId-000000000001", "shardId-000000000002"} {
		assert.Positive(t, fake.answeredFor(parent), "%s ended through the fake", parent)
	}
}

func waitStreamActive(t testing.TB, client *kinesis.Client, stream string) {
	t.Helper()
	testwait.Eventually(t, func() bool {
		out, err := client.DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
		return err == nil && out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive
	}, 10*time.Second, 20*time.Millisecond)
}
