package kinesis

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"
)

// localProps is the component metadata of a binding on the local emulators.
func localProps(t testing.TB, stream string) map[string]string {
	srv := localaws.Get(t)
	return map[string]string{
		"streamName":       stream,
		"region":           srv.Region,
		"endpoint":         srv.KinesisEndpoint,
		"dynamoDBEndpoint": srv.DynamoDBEndpoint,
		"accessKey":        localaws.AccessKeyID,
		"secretKey":        localaws.SecretAccessKey,
	}
}

// newBinding initialises a binding and closes it when the test ends. configure, if given, runs
// before Init (to set test seams).
func newBinding(t testing.TB, props map[string]string, configure ...func(*AWSKinesis)) *AWSKinesis {
	t.Helper()
	b := NewAWSKinesis(logger.NewLogger(t.Name())).(*AWSKinesis)
	for _, c := range configure {
		c(b)
	}
	require.NoError(t, b.Init(t.Context(), bindings.Metadata{Base: metadata.Base{Properties: props}}))
	t.Cleanup(func() { assert.NoError(t, b.Close()) })
	return b
}

// described has b describe its stream now, as its first put would otherwise: a test that bounds a
// put by a short deadline then measures the put, not the first DescribeStreamSummary, which a
// loaded machine can stretch past that deadline (seen: a throttling test got the deadline's error
// before any throttled answer).
func described(t testing.TB, b *AWSKinesis) {
	t.Helper()
	require.NoError(t, b.Ping(t.Context()))
}

func create(ctx context.Context, b *AWSKinesis, data []byte, md map[string]string) (*bindings.InvokeResponse, error) {
	return b.Invoke(ctx, &bindings.InvokeRequest{Operation: bindings.CreateOperation, Data: data, Metadata: md})
}

// readShard returns every record on a shard, from its start.
func readShard(t testing.TB, client *kinesis.Client, stream, shardID string) []types.Record {
	t.Helper()
	recs, err := readShardRecords(t.Context(), client, stream, shardID)
	require.NoError(t, err)
	return recs
}

// readShardRecords reads a shard from its start to its latest record; it returns errors rather than
// failing a test, for callers that report a failure their own way.
func readShardRecords(ctx context.Context, client *kinesis.Client, stream, shardID string) ([]types.Record, error) {
	it, err := client.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
		StreamName: aws.String(stream), ShardId: aws.String(shardID), ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
	})
	if err != nil {
		return nil, fmt.Errorf("shard iterator of %s: %w", shardID, err)
	}
	var out []types.Record
	iter := it.ShardIterator
	for iter != nil {
		res, err := client.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter})
		if err != nil {
			return nil, fmt.Errorf("records of %s: %w", shardID, err)
		}
		out = append(out, res.Records...)
		if len(res.Records) == 0 {
			break
		}
		iter = res.NextShardIterator
	}
	return out, nil
}

// streamRecords returns every record on every shard of the stream.
func streamRecords(t testing.TB, client *kinesis.Client, stream string) map[string][]types.Record {
	t.Helper()
	shards, err := client.ListShards(t.Context(), &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	require.NoError(t, err)
	out := map[string][]types.Record{}
	for _, s := range shards.Shards {
		if recs := readShard(t, client, stream, aws.ToString(s.ShardId)); len(recs) > 0 {
			out[aws.ToString(s.ShardId)] = recs
		}
	}
	return out
}

func TestPing(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)

	t.Run("existing stream", func(t *testing.T) {
		require.NoError(t, newBinding(t, localProps(t, stream)).Ping(t.Context()))
	})
	t.Run("missing stream", func(t *testing.T) {
		missing := localaws.UniqueName("missing")
		err := newBinding(t, localProps(t, missing)).Ping(t.Context())
		require.ErrorIs(t, err, ErrStreamNotFound)
		assert.Contains(t, err.Error(), missing)
	})
	t.Run("unreachable endpoint", func(t *testing.T) {
		props := localProps(t, stream)
		props["endpoint"] = "http://" + closedAddress(t)
		b := newBinding(t, props, func(b *AWSKinesis) { b.sdkHTTPClient = newFaultClient(nil) })
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		require.ErrorIs(t, b.Ping(ctx), ErrEndpointUnreachable)
	})
	t.Run("bad credentials", func(t *testing.T) {
		// The emulators accept any signature; the rejection AWS sends is injected at the SDK boundary.
		faults := newFaultClient(func(_ string, _ int, req *http.Request) *http.Response {
			return awsErrorResponse(req, http.StatusBadRequest, "UnrecognizedClientException", "The security token included in the request is invalid.")
		})
		err := newBinding(t, localProps(t, stream), func(b *AWSKinesis) { b.sdkHTTPClient = faults }).Ping(t.Context())
		require.ErrorIs(t, err, ErrInvalidCredentials)
	})
}

// closedAddress is a loopback address nothing listens on.
func closedAddress(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestInitRejectsBadMetadataWithoutNetwork(t *testing.T) {
	t.Parallel()
	b := NewAWSKinesis(logger.NewLogger(t.Name()))
	err := b.Init(t.Context(), bindings.Metadata{Base: metadata.Base{Properties: map[string]string{"mode": "turbo"}}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "'streamName' is required (or 'streamARN')")
	require.NoError(t, b.Close())
}

func TestLifecycleErrors(t *testing.T) {
	t.Parallel()
	props := map[string]string{"streamName": "s", "region": "us-east-1", "endpoint": "http://" + closedAddress(t)}
	b := newBinding(t, props)

	err := b.Read(t.Context(), func(context.Context, *bindings.ReadResponse) ([]byte, error) { return nil, nil })
	require.Error(t, err)
	assert.Contains(t, err.Error(), "'consumerName' is required by the input binding")

	require.NoError(t, b.Close())
	require.NoError(t, b.Close(), "Close is idempotent")
	_, err = create(t.Context(), b, []byte("x"), nil)
	require.ErrorIs(t, err, ErrClosed)
	err = b.Read(t.Context(), func(context.Context, *bindings.ReadResponse) ([]byte, error) { return nil, nil })
	require.ErrorIs(t, err, ErrClosed)

	fresh := NewAWSKinesis(logger.NewLogger(t.Name()))
	_, err = fresh.Invoke(t.Context(), &bindings.InvokeRequest{Operation: bindings.CreateOperation})
	require.Error(t, err, "Invoke before Init")
	assert.NotErrorIs(t, err, ErrClosed)
}
