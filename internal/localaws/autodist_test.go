package localaws

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/eventstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/testwait"
)

// sameHashKey is one ExplicitHashKey (2^127) for every record of a test: on USER_PARTITION_KEY it
// picks one shard, on AUTO it must not.
const sameHashKey = "170141183460469231731687303715884105728"

// autoEnv is a proxy in front of the shared kinesis-local, a client through it and a fresh
// on-demand stream (4 shards on kinesis-local).
type autoEnv struct {
	proxy       *AutoDistribution
	client      *kinesis.Client
	direct      *kinesis.Client // kinesis-local itself
	stream, arn string
}

func newAutoEnv(t *testing.T) autoEnv {
	t.Helper()
	s := Get(t)
	a := NewAutoDistribution(t, s.KinesisEndpoint)
	e := autoEnv{proxy: a, client: kinesisClient(s.AWSConfig(), a.URL()), direct: s.KinesisClient()}
	e.stream, e.arn = onDemandStream(t, e.direct)
	return e
}

// onDemandStream is NewOnDemandStream with the stream's ARN.
func onDemandStream(t *testing.T, client *kinesis.Client) (name, arn string) {
	t.Helper()
	name = NewOnDemandStream(t)
	out, err := client.DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
	require.NoError(t, err)
	return name, aws.ToString(out.StreamDescriptionSummary.StreamARN)
}

// setStrategy sets the strategy through the SDK call, which takes the stream by ARN only.
func (e autoEnv) setStrategy(t *testing.T, strategy types.RecordDistributionStrategy) {
	t.Helper()
	_, err := e.client.UpdateStreamRecordDistributionStrategy(t.Context(),
		&kinesis.UpdateStreamRecordDistributionStrategyInput{StreamARN: aws.String(e.arn), RecordDistributionStrategy: strategy})
	require.NoError(t, err)
}

func (e autoEnv) strategy(t *testing.T, stream string) types.RecordDistributionStrategy {
	t.Helper()
	out, err := e.client.DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
	require.NoError(t, err)
	return out.StreamDescriptionSummary.RecordDistributionStrategy
}

func (e autoEnv) put(t *testing.T, in kinesis.PutRecordInput) *kinesis.PutRecordOutput {
	t.Helper()
	in.StreamName = aws.String(e.stream)
	out, err := e.client.PutRecord(t.Context(), &in)
	require.NoError(t, err)
	return out
}

// readAll waits until a record with data until is visible (kinesis-local shows puts a few ms
// late) and returns every record of the stream, by data.
func (e autoEnv) readAll(t *testing.T, until string) map[string]types.Record {
	t.Helper()
	var got map[string]types.Record
	testwait.Eventually(t, func() bool {
		got = map[string]types.Record{}
		shards, err := e.client.ListShards(t.Context(), &kinesis.ListShardsInput{StreamName: aws.String(e.stream)})
		require.NoError(t, err)
		for _, sh := range shards.Shards {
			it, err := e.client.GetShardIterator(t.Context(), &kinesis.GetShardIteratorInput{
				StreamName: aws.String(e.stream), ShardId: sh.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
			})
			require.NoError(t, err)
			out, err := e.client.GetRecords(t.Context(), &kinesis.GetRecordsInput{ShardIterator: it.ShardIterator})
			require.NoError(t, err)
			for _, r := range out.Records {
				got[string(r.Data)] = r
			}
		}
		_, ok := got[until]
		return ok
	}, 10*time.Second, 20*time.Millisecond, "record %q should become readable", until)
	return got
}

func requireAPIError(t *testing.T, err error, code string) {
	t.Helper()
	require.Error(t, err)
	apiErr, ok := errors.AsType[smithy.APIError](err)
	require.True(t, ok, "%v should be an API error", err)
	assert.Equal(t, code, apiErr.ErrorCode(), err.Error())
}

func TestAutoDistributionUpdateStrategy(t *testing.T) {
	t.Parallel()
	e := newAutoEnv(t)
	assert.Regexp(t, `^http://127\.0\.0\.1:\d+$`, e.proxy.URL())

	assert.Equal(t, types.RecordDistributionStrategyUserPartitionKey, e.strategy(t, e.stream), "the default")
	e.setStrategy(t, types.RecordDistributionStrategyAuto)
	assert.Equal(t, types.RecordDistributionStrategyAuto, e.strategy(t, e.stream))
	assert.True(t, e.proxy.Auto(e.stream))
	assert.True(t, e.proxy.Auto(e.arn))

	// As on AWS: AUTO needs an on-demand stream, and provisioned ones report no strategy.
	provisioned := NewStream(t, 1)
	_, err := e.client.UpdateStreamRecordDistributionStrategy(t.Context(), &kinesis.UpdateStreamRecordDistributionStrategyInput{
		StreamARN:                  aws.String(strings.Replace(e.arn, e.stream, provisioned, 1)),
		RecordDistributionStrategy: types.RecordDistributionStrategyAuto,
	})
	requireAPIError(t, err, "InvalidArgumentException")
	assert.Empty(t, e.strategy(t, provisioned))
	assert.False(t, e.proxy.Auto(provisioned))

	_, err = e.client.UpdateStreamRecordDistributionStrategy(t.Context(), &kinesis.UpdateStreamRecordDistributionStrategyInput{
		StreamARN:                  aws.String(e.arn + "-missing"),
		RecordDistributionStrategy: types.RecordDistributionStrategyAuto,
	})
	requireAPIError(t, err, "ResourceNotFoundException")

	// A stream deleted and created again under its name starts afresh.
	other, otherARN := onDemandStream(t, e.direct)
	e.proxy.SetStrategy(otherARN, true)
	require.Equal(t, types.RecordDistributionStrategyAuto, e.strategy(t, other))
	_, err = e.client.DeleteStream(t.Context(), &kinesis.DeleteStreamInput{StreamARN: aws.String(otherARN)})
	require.NoError(t, err)
	assert.False(t, e.proxy.Auto(other))
}

func TestAutoDistributionKeylessPut(t *testing.T) {
	t.Parallel()
	e := newAutoEnv(t)
	e.setStrategy(t, types.RecordDistributionStrategyAuto)

	e.put(t, kinesis.PutRecordInput{Data: []byte("keyless")})
	// By ARN too, as the binding may name the stream.
	_, err := e.client.PutRecord(t.Context(), &kinesis.PutRecordInput{
		StreamARN: aws.String(e.arn), PartitionKey: aws.String("mine"), Data: []byte("keyed"),
	})
	require.NoError(t, err)

	got := e.readAll(t, "keyed")
	require.Contains(t, got, "keyless")
	assert.Nil(t, got["keyless"].PartitionKey, "AWS returns no key for a record put without one")
	assert.Equal(t, "mine", aws.ToString(got["keyed"].PartitionKey))
}

func TestAutoDistributionRejectsSequenceNumberForOrdering(t *testing.T) {
	t.Parallel()
	e := newAutoEnv(t)
	first := e.put(t, kinesis.PutRecordInput{PartitionKey: aws.String("k"), Data: []byte("first")})
	// Accepted before the switch, so that the rejection below is AUTO's.
	e.put(t, kinesis.PutRecordInput{
		PartitionKey: aws.String("k"), Data: []byte("ordered-before"), SequenceNumberForOrdering: first.SequenceNumber,
	})

	e.setStrategy(t, types.RecordDistributionStrategyAuto)
	_, err := e.client.PutRecord(t.Context(), &kinesis.PutRecordInput{
		StreamName: aws.String(e.stream), PartitionKey: aws.String("k"), Data: []byte("ordered-auto"),
		SequenceNumberForOrdering: first.SequenceNumber,
	})
	requireAPIError(t, err, "InvalidArgumentException")

	// Whatever the rejected put wrote would be visible by the time a later put is.
	e.put(t, kinesis.PutRecordInput{PartitionKey: aws.String("k"), Data: []byte("fence")})
	got := e.readAll(t, "fence")
	assert.NotContains(t, got, "ordered-auto")
	assert.Len(t, got, 3)
}

func TestAutoDistributionIgnoresKeysForPlacement(t *testing.T) {
	t.Parallel()
	e := newAutoEnv(t)
	const n = 40
	puts := map[string]func() map[string]int{
		"PutRecord": func() map[string]int {
			shards := map[string]int{}
			for range n {
				out := e.put(t, kinesis.PutRecordInput{
					PartitionKey: aws.String("same"), ExplicitHashKey: aws.String(sameHashKey), Data: []byte("x"),
				})
				shards[aws.ToString(out.ShardId)]++
			}
			return shards
		},
		"PutRecords": func() map[string]int {
			entries := make([]types.PutRecordsRequestEntry, n)
			for i := range entries {
				entries[i] = types.PutRecordsRequestEntry{
					PartitionKey: aws.String("same"), ExplicitHashKey: aws.String(sameHashKey), Data: []byte("x"),
				}
			}
			out, err := e.client.PutRecords(t.Context(), &kinesis.PutRecordsInput{StreamName: aws.String(e.stream), Records: entries})
			require.NoError(t, err)
			require.Zero(t, aws.ToInt32(out.FailedRecordCount))
			shards := map[string]int{}
			for _, r := range out.Records {
				shards[aws.ToString(r.ShardId)]++
			}
			return shards
		},
	}
	for name, put := range puts {
		assert.Len(t, put(), 1, "%s on USER_PARTITION_KEY: one hash key, one shard", name)
	}
	e.setStrategy(t, types.RecordDistributionStrategyAuto)
	for name, put := range puts {
		shards := put()
		assert.Greater(t, len(shards), 1, "%s on AUTO: %d records with one key should spread: %v", name, n, shards)
	}
}

func TestAutoDistributionPutRecordsKeyless(t *testing.T) {
	t.Parallel()
	e := newAutoEnv(t)
	e.setStrategy(t, types.RecordDistributionStrategyAuto)

	out, err := e.client.PutRecords(t.Context(), &kinesis.PutRecordsInput{StreamName: aws.String(e.stream), Records: []types.PutRecordsRequestEntry{
		{Data: []byte("keyless-1")},
		{Data: []byte("keyed"), PartitionKey: aws.String("k")},
		{Data: []byte("keyless-2"), ExplicitHashKey: aws.String(sameHashKey)},
	}})
	require.NoError(t, err)
	require.Zero(t, aws.ToInt32(out.FailedRecordCount))

	got := e.readAll(t, "keyless-2")
	require.Len(t, got, 3)
	assert.Nil(t, got["keyless-1"].PartitionKey)
	assert.Nil(t, got["keyless-2"].PartitionKey)
	assert.Equal(t, "k", aws.ToString(got["keyed"].PartitionKey))
}

func TestAutoDistributionSwitchBackToPartitionKeys(t *testing.T) {
	t.Parallel()
	e := newAutoEnv(t)
	e.setStrategy(t, types.RecordDistributionStrategyAuto)
	e.put(t, kinesis.PutRecordInput{Data: []byte("keyless")})

	e.setStrategy(t, types.RecordDistributionStrategyUserPartitionKey)
	assert.Equal(t, types.RecordDistributionStrategyUserPartitionKey, e.strategy(t, e.stream))
	assert.False(t, e.proxy.Auto(e.stream))
	_, err := e.client.PutRecord(t.Context(), &kinesis.PutRecordInput{StreamName: aws.String(e.stream), Data: []byte("refused")})
	// kinesis-local's code; AWS's may differ.
	requireAPIError(t, err, "SerializationException")
	e.put(t, kinesis.PutRecordInput{PartitionKey: aws.String("k"), Data: []byte("keyed")})
	got := e.readAll(t, "keyed")
	assert.NotContains(t, got, "refused")
	assert.Nil(t, got["keyless"].PartitionKey, "records put on AUTO stay keyless")
}

// TestAutoDistributionStreamsSubscriptions: SubscribeToShard answers last minutes; the proxy must
// pass their events on as they come, not at the end.
func TestAutoDistributionStreamsSubscriptions(t *testing.T) {
	t.Parallel()
	e := newAutoEnv(t)
	reg, err := e.client.RegisterStreamConsumer(t.Context(), &kinesis.RegisterStreamConsumerInput{
		StreamARN: aws.String(e.arn), ConsumerName: aws.String("c"),
	})
	require.NoError(t, err)
	testwait.Eventually(t, func() bool {
		out, derr := e.client.DescribeStreamConsumer(t.Context(), &kinesis.DescribeStreamConsumerInput{ConsumerARN: reg.Consumer.ConsumerARN})
		require.NoError(t, derr)
		return out.ConsumerDescription.ConsumerStatus == types.ConsumerStatusActive
	}, 10*time.Second, 25*time.Millisecond)

	// Raw, because the SDK needs the initial-response event kinesis-local does not send
	// (TESTING-ENV.md); kinesis-local only checks that the signature headers are there.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	body := `{"ConsumerARN":"` + aws.ToString(reg.Consumer.ConsumerARN) +
		`","ShardId":"shardId-000000000000","StartingPosition":{"Type":"TRIM_HORIZON"}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.proxy.URL(), strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", jsonContentType)
	req.Header.Set("X-Amz-Target", targetPrefix+"SubscribeToShard")
	req.Header.Set("X-Amz-Date", time.Now().UTC().Format("20060102T150405Z"))
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/kinesis/aws4_request, "+
		"SignedHeaders=host, Signature=0")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	msg, err := eventstream.NewDecoder().Decode(resp.Body, nil)
	require.NoError(t, err, "an event within seconds, not when the subscription ends")
	assert.Equal(t, "SubscribeToShardEvent", msg.Headers.Get(":event-type").String())
}
