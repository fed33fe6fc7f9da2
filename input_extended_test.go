package kinesis

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/leases"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/testlog"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"
)

// Extended mode against kinesis-local, through the test-only fanoutFixClient (kinesis-local omits
// the initial-response event the SDK needs). kinesis-local's fan-out sends one event a second, so
// deliveries come in steps of about a second.

// extendedTimeout bounds the waits for deliveries: a consumer takes a lease per shard-sync tick
// (200 ms here) and reads a shard's records a second after subscribing.
const extendedTimeout = 30 * time.Second

// extendedProps is the metadata of an extended-mode consumer of the test's own (consumer name,
// lease table) reading the stream from its start, with a short lease.
func extendedProps(t testing.TB, stream string) map[string]string {
	props := withConsumer(localProps(t, stream), modeExtended)
	props["shardSyncInterval"] = "200ms"
	return props
}

// newExtendedBinding initialises a binding whose SDK clients go through a new fanoutFixClient.
func newExtendedBinding(t testing.TB, props map[string]string) (*AWSKinesis, *fanoutFixClient) {
	t.Helper()
	fix := newFanoutFixClient()
	return newBinding(t, props, func(b *AWSKinesis) { b.sdkHTTPClient = fix }), fix
}

// streamConsumer describes the consumer of that name, or returns the error.
func streamConsumer(t testing.TB, stream, name string) (*types.ConsumerDescription, error) {
	t.Helper()
	client := localaws.Get(t).KinesisClient()
	sum, err := client.DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
	require.NoError(t, err)
	out, err := client.DescribeStreamConsumer(t.Context(), &kinesis.DescribeStreamConsumerInput{
		StreamARN: sum.StreamDescriptionSummary.StreamARN, ConsumerName: aws.String(name),
	})
	if err != nil {
		return nil, err
	}
	return out.ConsumerDescription, nil
}

// hashKeyOf returns an explicit hash key inside shard i of n equal shards.
func hashKeyOf(i, n int) string {
	space := new(big.Int).Lsh(big.NewInt(1), 128)
	k := new(big.Int).Mul(space, big.NewInt(int64(2*i+1)))
	return k.Div(k, big.NewInt(int64(2*n))).String()
}

func TestExtendedDeliversThroughFanOutWithReadMetadata(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 2)
	props := extendedProps(t, stream)
	b, fix := newExtendedBinding(t, props)

	var (
		mu  sync.Mutex
		got = map[string]map[string]string{}
		ord = map[string][]string{} // per shard, in delivery order
	)
	require.NoError(t, b.Read(t.Context(), func(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		got[string(r.Data)] = r.Metadata
		ord[r.Metadata[readShardID]] = append(ord[r.Metadata[readShardID]], string(r.Data))
		return nil, nil
	}))
	c, err := streamConsumer(t, stream, props["consumerName"])
	require.NoError(t, err, "Read registers the stream consumer named consumerName")
	assert.Equal(t, types.ConsumerStatusActive, c.ConsumerStatus)

	client := localaws.Get(t).KinesisClient()
	type put struct{ shard, seq string }
	puts := map[string]put{}
	want := make([]string, 0, 10)
	for i := range 10 {
		data := fmt.Sprintf("record-%02d", i)
		out, err := client.PutRecord(t.Context(), &kinesis.PutRecordInput{
			StreamName: aws.String(stream), Data: []byte(data), PartitionKey: aws.String(fmt.Sprintf("key-%d", i)),
			ExplicitHashKey: aws.String(hashKeyOf(i%2, 2)),
		})
		require.NoError(t, err)
		puts[data] = put{aws.ToString(out.ShardId), aws.ToString(out.SequenceNumber)}
		want = append(want, data)
	}
	testwait.EventuallyWithT(t, func(c *testwait.Collect) {
		mu.Lock()
		defer mu.Unlock()
		assert.Len(c, got, len(want))
	}, extendedTimeout, 50*time.Millisecond)

	mu.Lock()
	defer mu.Unlock()
	for i, data := range want {
		md := got[data]
		assert.Equal(t, puts[data].shard, md[readShardID], data)
		assert.Equal(t, puts[data].seq, md[readSequenceNumber], data)
		assert.Equal(t, fmt.Sprintf("key-%d", i), md[readPartitionKey], data)
		assert.Equal(t, stream, md[readStreamName], data)
		ts, err := time.Parse(arrivalTimeLayout, md[readArrivalTimestamp])
		require.NoError(t, err, data)
		assert.WithinDuration(t, time.Now(), ts, time.Minute, data)
		assert.NotContains(t, md, readSubSequenceNumber, "not an aggregate")
	}
	for shard, data := range ord {
		assert.IsIncreasing(t, data, "shard %s in put order", shard)
	}
	assert.Positive(t, fix.count("SubscribeToShard"))
	assert.Zero(t, fix.count("GetRecords"), "extended mode reads through SubscribeToShard only")
}

// TestExtendedReconnectMidStreamDeliversEveryRecordOnce cuts the connection under every open
// subscription, several times while records are put: once right after subscribing, before the
// first event, when the reader has no continuation sequence number and, the shard having no
// checkpoint yet, starts again from initialPosition (LATEST here: records put after Read returned
// must not be skipped), and then mid-stream, when it resubscribes after the continuation sequence
// number.
// kinesis-local takes a second or more to notice a broken connection and refuses the new
// subscription meanwhile (ResourceInUseException), so the reader's backoff is exercised too. With
// a handler that always succeeds, every record must arrive exactly once, in order per partition key.
func TestExtendedReconnectMidStreamDeliversEveryRecordOnce(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 2)
	props := extendedProps(t, stream)
	props["initialPosition"] = string(positionLatest)
	b, fix := newExtendedBinding(t, props)
	rec := newRecorder()
	require.NoError(t, b.Read(t.Context(), rec.handle))
	client := localaws.Get(t).KinesisClient()

	testwait.Eventually(t, func() bool { return fix.openSubscriptions() == 2 }, extendedTimeout, 5*time.Millisecond)
	cuts := fix.dropSubscriptions()
	sent, err := putLanes(t.Context(), client, stream, "r", faultLanes, 0, 10)
	require.NoError(t, err)
	rec.waitFor(t, sent, extendedTimeout)

	for round := range 3 {
		batch, err := putLanes(t.Context(), client, stream, "r", faultLanes, 10+20*round, 20+20*round)
		require.NoError(t, err)
		sent = append(sent, batch...)
		testwait.Eventually(t, func() bool { return fix.openSubscriptions() > 0 }, extendedTimeout, 10*time.Millisecond)
		time.Sleep(500 * time.Millisecond) // mid-subscription, between kinesis-local's events
		cuts += fix.dropSubscriptions()
		batch, err = putLanes(t.Context(), client, stream, "r", faultLanes, 20+20*round, 30+20*round)
		require.NoError(t, err)
		sent = append(sent, batch...)
		rec.waitFor(t, sent, extendedTimeout)
	}
	res := checkAtLeastOnce(t, sent, rec.deliveries())
	assert.Zero(t, res.duplicates, "a reconnect resumes right after the last delivered record")
	assert.GreaterOrEqual(t, cuts, 4, "the cuts hit open subscriptions")
	t.Logf("%d subscriptions cut, %d SubscribeToShard calls", cuts, fix.count("SubscribeToShard"))
}

// TestExtendedHandlerFailuresLoseNothing fails every 7th handler call once; each failed record must
// be delivered again before the next record of its shard, and nothing may be lost.
func TestExtendedHandlerFailuresLoseNothing(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 2)
	props := extendedProps(t, stream)
	props["retryInitialInterval"] = "20ms"
	props["retryMaxInterval"] = "100ms"
	b, _ := newExtendedBinding(t, props)

	rec := newRecorder()
	var calls atomic.Int64
	failed := map[string]bool{}
	var failMu sync.Mutex
	require.NoError(t, b.Read(t.Context(), func(ctx context.Context, r *bindings.ReadResponse) ([]byte, error) {
		data := string(r.Data)
		if calls.Add(1)%7 == 0 {
			failMu.Lock()
			first := !failed[data]
			failed[data] = true
			failMu.Unlock()
			if first {
				return nil, errors.New("the app is not ready")
			}
		}
		return rec.handle(ctx, r)
	}))
	sent, err := putLanes(t.Context(), localaws.Get(t).KinesisClient(), stream, "f", faultLanes, 0, 25)
	require.NoError(t, err)
	rec.waitFor(t, sent, extendedTimeout)
	checkAtLeastOnce(t, sent, rec.deliveries())
	failMu.Lock()
	defer failMu.Unlock()
	assert.NotEmpty(t, failed, "some deliveries failed")
}

// TestExtendedRestartResumesAfterTheCheckpoint closes a consumer after it delivered a batch and
// starts another with the same consumer name: the second must deliver only what came after, and
// the stream consumer must have survived the first one's Close.
func TestExtendedRestartResumesAfterTheCheckpoint(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 2)
	props := extendedProps(t, stream)
	client := localaws.Get(t).KinesisClient()

	first, _ := newExtendedBinding(t, props)
	rec := newRecorder()
	require.NoError(t, first.Read(t.Context(), rec.handle))
	batch1, err := putLanes(t.Context(), client, stream, "one", faultLanes, 0, 10)
	require.NoError(t, err)
	rec.waitFor(t, batch1, extendedTimeout)
	require.NoError(t, first.Close())
	c, err := streamConsumer(t, stream, props["consumerName"])
	require.NoError(t, err, "Close leaves the stream consumer registered by default")
	require.Equal(t, types.ConsumerStatusActive, c.ConsumerStatus)

	batch2, err := putLanes(t.Context(), client, stream, "two", faultLanes, 0, 10)
	require.NoError(t, err)
	second, _ := newExtendedBinding(t, props)
	rec2 := newRecorder()
	require.NoError(t, second.Read(t.Context(), rec2.handle))
	rec2.waitFor(t, batch2, extendedTimeout)
	time.Sleep(1500 * time.Millisecond) // another event round: a redelivery of batch 1 would show now
	assert.Empty(t, rec2.missing(batch2))
	for _, d := range rec2.deliveries() {
		require.True(t, strings.HasPrefix(d, "two|"), "delivered again after the restart: %s", d)
	}
	checkAtLeastOnce(t, batch2, rec2.deliveries())
}

// TestExtendedCloseEndsSubscriptionsAtOnceAndCanDeregister closes consumers with open
// subscriptions: Close returns well within 5 s, leaves no subscription open, and deregisters the
// stream consumer only with deregisterConsumerOnClose.
func TestExtendedCloseEndsSubscriptionsAtOnceAndCanDeregister(t *testing.T) {
	t.Parallel()
	for _, deregister := range []bool{false, true} {
		t.Run(fmt.Sprintf("deregisterConsumerOnClose=%v", deregister), func(t *testing.T) {
			t.Parallel()
			stream := localaws.NewStream(t, 2)
			props := extendedProps(t, stream)
			props["deregisterConsumerOnClose"] = strconv.FormatBool(deregister)
			b, fix := newExtendedBinding(t, props)
			rec := newRecorder()
			require.NoError(t, b.Read(t.Context(), rec.handle))
			testwait.Eventually(t, func() bool { return fix.openSubscriptions() == 2 }, extendedTimeout, 10*time.Millisecond)

			began := time.Now()
			require.NoError(t, b.Close())
			took := time.Since(began)
			t.Logf("Close took %v", took)
			assert.Less(t, took, 2*time.Second, "an open subscription must not hold Close up")
			assert.Zero(t, fix.openSubscriptions(), "no subscription outlives Close")

			c, err := streamConsumer(t, stream, props["consumerName"])
			if !deregister {
				require.NoError(t, err)
				assert.Equal(t, types.ConsumerStatusActive, c.ConsumerStatus)
				return
			}
			var notFound *types.ResourceNotFoundException
			if err == nil {
				assert.Equal(t, types.ConsumerStatusDeleting, c.ConsumerStatus)
			} else {
				require.ErrorAs(t, err, &notFound)
			}
		})
	}
}

// TestExtendedReplicasSplitTheShardsAndTakeOverAKilledOne runs two replicas of one consumer on four
// shards: they share the shards (one subscriber per shard), and when one dies without Close, and
// so without releasing its leases, the other takes its shards once the leases expire.
func TestExtendedReplicasSplitTheShardsAndTakeOverAKilledOne(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 4)
	props := extendedProps(t, stream)
	client := localaws.Get(t).KinesisClient()

	type replica struct {
		b   *AWSKinesis
		fix *fanoutFixClient
		rec *recorder
	}
	start := func(name string) replica {
		fix := newFanoutFixClient()
		b := NewAWSKinesis(logger.NewLogger(t.Name() + "/" + name)).(*AWSKinesis)
		b.sdkHTTPClient = fix
		require.NoError(t, b.Init(t.Context(), bindings.Metadata{Base: metadata.Base{Properties: props}}))
		// The dead replica's Close fails (it cannot release); it is called only to end its goroutines.
		t.Cleanup(func() { _ = b.Close() })
		r := replica{b: b, fix: fix, rec: newRecorder()}
		require.NoError(t, b.Read(t.Context(), r.rec.handle))
		return r
	}
	a, bb := start("a"), start("b")
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		items, err := scanLeases(context.Background(), localaws.Get(t).DynamoDBClient(), props["consumerName"])
		t.Logf("lease table at the failure (scan error: %v):", err)
		for _, item := range items {
			id, _ := attrString(item, leases.AttrShardID)
			owner, _ := attrString(item, leases.AttrOwner)
			cp, _ := attrString(item, leases.AttrCheckpoint)
			t.Logf("  %s owner=%q checkpoint=%q", id, owner, cp)
		}
	})

	testwait.Eventually(t, func() bool {
		return a.fix.openSubscriptions() == 2 && bb.fix.openSubscriptions() == 2
	}, 20*time.Second, 50*time.Millisecond, "two shards each")

	sent, err := putLanes(t.Context(), client, stream, "r", 8, 0, 5)
	require.NoError(t, err)
	testwait.Eventually(t, func() bool { return len(missingFromBoth(sent, a.rec, bb.rec)) == 0 }, extendedTimeout, 50*time.Millisecond)
	assert.NotEmpty(t, a.rec.deliveries())
	assert.NotEmpty(t, bb.rec.deliveries())
	checkNoneLost(t, sent, append(a.rec.deliveries(), bb.rec.deliveries()...))

	a.fix.kill()
	killed := time.Now()
	more, err := putLanes(t.Context(), client, stream, "r", 8, 5, 10)
	require.NoError(t, err)
	bb.rec.waitFor(t, more, extendedTimeout)
	t.Logf("the survivor delivered the dead replica's records %v after the kill (lease 3 s)", time.Since(killed).Round(100*time.Millisecond))
	testwait.Eventually(t, func() bool { return bb.fix.openSubscriptions() == 4 }, extendedTimeout, 50*time.Millisecond,
		"the survivor subscribes to every shard")
	checkNoneLost(t, append(sent, more...), append(a.rec.deliveries(), bb.rec.deliveries()...))
}

func missingFromBoth(want []string, a, b *recorder) []string {
	var out []string
	for _, m := range a.missing(want) {
		if len(b.missing([]string{m})) > 0 {
			out = append(out, m)
		}
	}
	return out
}

// TestExtendedConsumerRegistration covers the stream consumer's lifecycle without a consumer running.
func TestExtendedConsumerRegistration(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	log := logger.NewLogger(t.Name())

	t.Run("registered once when missing, reused when present", func(t *testing.T) {
		faults := newFaultClient(nil)
		client := localaws.Get(t).KinesisClient(func(o *kinesis.Options) { o.HTTPClient = faults })
		m := &kinesisMetadata{StreamName: stream, ConsumerName: "shared-by-replicas"}
		arns := make([]string, 3)
		var wg sync.WaitGroup
		for i := range arns { // replicas starting together
			wg.Go(func() {
				arn, err := ensureConsumer(t.Context(), client, m, log)
				assert.NoError(t, err)
				arns[i] = arn
			})
		}
		wg.Wait()
		require.NotEmpty(t, arns[0])
		assert.Equal(t, []string{arns[0], arns[0], arns[0]}, arns, "one consumer for all")
		registered := faults.count("RegisterStreamConsumer")
		assert.GreaterOrEqual(t, registered, 1)

		arn, err := ensureConsumer(t.Context(), client, m, log)
		require.NoError(t, err)
		assert.Equal(t, arns[0], arn)
		assert.Equal(t, registered, faults.count("RegisterStreamConsumer"), "an ACTIVE consumer is reused")
	})

	t.Run("consumerARN is used as given", func(t *testing.T) {
		client := localaws.Get(t).KinesisClient()
		pre, err := ensureConsumer(t.Context(), client, &kinesisMetadata{StreamName: stream, ConsumerName: "pre-registered"}, log)
		require.NoError(t, err)

		faults := newFaultClient(nil)
		client = localaws.Get(t).KinesisClient(func(o *kinesis.Options) { o.HTTPClient = faults })
		arn, err := ensureConsumer(t.Context(), client, &kinesisMetadata{StreamName: stream, ConsumerName: "ignored", ConsumerARN: pre}, log)
		require.NoError(t, err)
		assert.Equal(t, pre, arn)
		assert.Zero(t, faults.count("RegisterStreamConsumer"))

		_, err = ensureConsumer(t.Context(), client, &kinesisMetadata{StreamName: stream, ConsumerARN: pre + "0"}, log)
		require.ErrorIs(t, err, errConsumerMissing, "a wrong ARN is an error, not a registration")
		assert.Zero(t, faults.count("RegisterStreamConsumer"))
	})

	t.Run("an error other than not-found registers nothing", func(t *testing.T) {
		faults := newFaultClient(func(op string, _ int, req *http.Request) *http.Response {
			if op == "DescribeStreamConsumer" {
				return awsErrorResponse(req, http.StatusBadRequest, "AccessDeniedException", "not allowed")
			}
			return nil
		})
		client := localaws.Get(t).KinesisClient(func(o *kinesis.Options) { o.HTTPClient = faults })
		_, err := ensureConsumer(t.Context(), client, &kinesisMetadata{StreamName: stream, ConsumerName: "denied"}, log)
		require.ErrorIs(t, err, ErrAccessDenied)
		assert.Zero(t, faults.count("RegisterStreamConsumer"))
	})

	t.Run("throttled describe is retried until the deadline", func(t *testing.T) {
		faults := newFaultClient(func(op string, call int, req *http.Request) *http.Response {
			if op == "DescribeStreamConsumer" && call <= 3 {
				return awsErrorResponse(req, http.StatusBadRequest, "LimitExceededException", "Rate exceeded")
			}
			return nil
		})
		client := localaws.Get(t).KinesisClient(func(o *kinesis.Options) { o.HTTPClient = faults })
		arn, err := ensureConsumer(t.Context(), client, &kinesisMetadata{StreamName: stream, ConsumerName: "throttled"}, log)
		require.NoError(t, err)
		assert.NotEmpty(t, arn)
		assert.GreaterOrEqual(t, faults.count("DescribeStreamConsumer"), 4)
	})

	t.Run("a missing stream says so", func(t *testing.T) {
		_, err := ensureConsumer(t.Context(), localaws.Get(t).KinesisClient(), &kinesisMetadata{StreamName: localaws.UniqueName("missing"), ConsumerName: "c"}, log)
		require.ErrorIs(t, err, ErrStreamNotFound)
	})
}

// TestExtendedSubscribeThrottlingBacksOff rejects the first SubscribeToShard calls with
// LimitExceededException, which no emulator does: the calls must come ever further apart, the
// episode be logged once, and the records then arrive.
func TestExtendedSubscribeThrottlingBacksOff(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	const rejected = 4
	var (
		mu    sync.Mutex
		calls []time.Time
	)
	fix := newFanoutFixClient()
	fix.subscribe = func(req *http.Request) *http.Response {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, time.Now())
		if len(calls) <= rejected {
			return awsErrorResponse(req, http.StatusBadRequest, "LimitExceededException", "Rate exceeded for consumer and shard")
		}
		return nil
	}
	log, logs := testlog.New(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	b := NewAWSKinesis(log).(*AWSKinesis)
	b.sdkHTTPClient = fix
	require.NoError(t, b.Init(t.Context(), bindings.Metadata{Base: metadata.Base{Properties: extendedProps(t, stream)}}))
	t.Cleanup(func() { assert.NoError(t, b.Close()) })
	rec := newRecorder()
	require.NoError(t, b.Read(t.Context(), rec.handle))
	sent, err := putLanes(t.Context(), localaws.Get(t).KinesisClient(), stream, "t", 2, 0, 5)
	require.NoError(t, err)
	rec.waitFor(t, sent, extendedTimeout)

	mu.Lock()
	defer mu.Unlock()
	require.Greater(t, len(calls), rejected)
	for i := 1; i <= rejected; i++ {
		gap := calls[i].Sub(calls[i-1])
		// The jittered backoff is at least half of 1 s, 2 s, 4 s, ..., and never less than AWS's 1 s
		// between two calls.
		want := max(time.Duration(1<<(i-1))*time.Second/2, time.Second)
		assert.GreaterOrEqual(t, gap, want-50*time.Millisecond, "call %d came %v after the one before", i, gap)
	}
	out := logs.String()
	assert.Equal(t, 1, strings.Count(out, "Subscribing to the shard failed, retrying with backoff"), "one warning for the episode")
	assert.Contains(t, out, "LimitExceededException")
	assert.Equal(t, 1, strings.Count(out, "Subscribing to the shard works again after 4 failed attempts"))
}
