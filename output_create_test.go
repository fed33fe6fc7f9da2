package kinesis

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
	"github.com/dapr/components-contrib/bindings"
)

func TestCreateWritesTheRecordAndReturnsItsPosition(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 2)
	b := newBinding(t, localProps(t, stream))
	client := localaws.Get(t).KinesisClient()

	// A hash key picks the shard: 0 falls in the first shard's range, 2^128-1 in the last.
	cases := []struct {
		data, key, hashKey, wantShard string
	}{
		{`{"order":1}`, "customer-1", "0", "shardId-000000000000"},
		{`{"order":2}`, "customer-2", "340282366920938463463374607431768211455", "shardId-000000000001"},
	}
	for _, tc := range cases {
		resp, err := create(t.Context(), b, []byte(tc.data), map[string]string{
			reqPartitionKey: tc.key, reqExplicitHashKey: tc.hashKey,
		})
		require.NoError(t, err)
		require.NotNil(t, resp)
		assert.Equal(t, tc.wantShard, resp.Metadata[respShardID])
		require.NotEmpty(t, resp.Metadata[respSequenceNumber])

		recs := readShard(t, client, stream, resp.Metadata[respShardID])
		require.Len(t, recs, 1)
		assert.Equal(t, tc.data, string(recs[0].Data))
		assert.Equal(t, tc.key, aws.ToString(recs[0].PartitionKey))
		assert.Equal(t, resp.Metadata[respSequenceNumber], aws.ToString(recs[0].SequenceNumber))
	}

	// Without a partition key the record still lands, under a generated key.
	resp, err := create(t.Context(), b, []byte("no key"), nil)
	require.NoError(t, err)
	var found bool
	for _, r := range readShard(t, client, stream, resp.Metadata[respShardID]) {
		if aws.ToString(r.SequenceNumber) == resp.Metadata[respSequenceNumber] {
			found = true
			assert.Equal(t, "no key", string(r.Data))
			assert.Len(t, aws.ToString(r.PartitionKey), 36, "a UUID")
		}
	}
	assert.True(t, found)
}

func TestCreateAcceptsARecordOfExactlyTheMaximumSize(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	b := newBinding(t, localProps(t, stream))
	data := bytes.Repeat([]byte("x"), defaultMaxRecordSize-1)
	resp, err := create(t.Context(), b, data, map[string]string{reqPartitionKey: "k"})
	require.NoError(t, err)
	assert.NotEmpty(t, resp.Metadata[respSequenceNumber])
}

func TestCreateRejectsBadInputAndWritesNothing(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 2)
	b := newBinding(t, localProps(t, stream))

	tests := []struct {
		name string
		req  bindings.InvokeRequest
		want string
	}{
		{"unknown operation", bindings.InvokeRequest{Operation: "delete", Data: []byte("x")}, `unsupported operation "delete"; supported: create`},
		{"partition key too long", bindings.InvokeRequest{Operation: bindings.CreateOperation, Data: []byte("x"),
			Metadata: map[string]string{reqPartitionKey: strings.Repeat("k", 257)}}, "'partitionKey' must be 1 to 256 characters"},
		{"hash key not decimal", bindings.InvokeRequest{Operation: bindings.CreateOperation, Data: []byte("x"),
			Metadata: map[string]string{reqExplicitHashKey: "abc"}}, "'explicitHashKey' must be a decimal integer"},
		{"hash key out of range", bindings.InvokeRequest{Operation: bindings.CreateOperation, Data: []byte("x"),
			Metadata: map[string]string{reqExplicitHashKey: "340282366920938463463374607431768211456"}}, "'explicitHashKey' must be at most 2^128-1"},
		{"bad ordering number", bindings.InvokeRequest{Operation: bindings.CreateOperation, Data: []byte("x"),
			Metadata: map[string]string{reqSequenceNumberForOrdering: "-3"}}, "'sequenceNumberForOrdering' must be a decimal"},
		{"data plus key over 1 MiB", bindings.InvokeRequest{Operation: bindings.CreateOperation, Data: bytes.Repeat([]byte("x"), defaultMaxRecordSize),
			Metadata: map[string]string{reqPartitionKey: "k"}}, "exceeds the stream's maximum record size of 1048576 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.Invoke(t.Context(), &tc.req)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err := b.Invoke(t.Context(), nil)
	require.ErrorIs(t, err, errNilRequest)

	assert.Empty(t, streamRecords(t, localaws.Get(t).KinesisClient(), stream), "a rejected request must write nothing")
}

func TestCreateOnMissingStreamSaysSo(t *testing.T) {
	t.Parallel()
	b := newBinding(t, localProps(t, localaws.UniqueName("missing")))
	_, err := create(t.Context(), b, []byte("x"), nil)
	require.ErrorIs(t, err, ErrStreamNotFound)
}

// TestCreateRetriesThrottlingWithinTheDeadline covers the PutRecord path (batchLinger 0, as upstream);
// the coalesced PutRecords path has its own throttling tests.
func TestCreateRetriesThrottlingWithinTheDeadline(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	props := localProps(t, stream)
	props["batchLinger"] = "0"

	t.Run("recovers", func(t *testing.T) {
		faults := newFaultClient(func(op string, call int, req *http.Request) *http.Response {
			if op == "PutRecord" && call <= 3 {
				return throttled(req)
			}
			return nil
		})
		b := newBinding(t, props, func(b *AWSKinesis) { b.sdkHTTPClient = faults })
		resp, err := create(t.Context(), b, []byte("after throttling"), map[string]string{reqPartitionKey: "k"})
		require.NoError(t, err)
		assert.Equal(t, 4, faults.count("PutRecord"), "three throttled attempts, then the one that landed")

		recs := readShard(t, localaws.Get(t).KinesisClient(), stream, resp.Metadata[respShardID])
		require.Len(t, recs, 1, "written once")
		assert.Equal(t, "after throttling", string(recs[0].Data))
	})

	t.Run("gives up at the deadline", func(t *testing.T) {
		faults := newFaultClient(func(op string, _ int, req *http.Request) *http.Response {
			if op == "PutRecord" {
				return throttled(req)
			}
			return nil
		})
		b := newBinding(t, props, func(b *AWSKinesis) { b.sdkHTTPClient = faults })
		described(t, b)
		ctx, cancel := context.WithTimeout(t.Context(), 400*time.Millisecond)
		defer cancel()
		_, err := create(ctx, b, []byte("never"), nil)
		require.ErrorIs(t, err, ErrThrottled)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Greater(t, faults.count("PutRecord"), 1, "throttling is retried")
	})
}

// callerResult is what one concurrent create caller got back.
type callerResult struct {
	key  string
	data string
	resp *bindings.InvokeResponse
	err  error
}

// createConcurrently runs one create per key, all at once, and returns each caller's result.
func createConcurrently(ctx context.Context, b *AWSKinesis, keys []string, data func(key string) string) []callerResult {
	out := make([]callerResult, len(keys))
	var wg sync.WaitGroup
	for i, key := range keys {
		wg.Go(func() {
			d := data(key)
			resp, err := create(ctx, b, []byte(d), map[string]string{reqPartitionKey: key})
			out[i] = callerResult{key: key, data: d, resp: resp, err: err}
		})
	}
	wg.Wait()
	return out
}

func keys(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}

func dataFor(key string) string { return `{"record":"` + key + `"}` }

// requireOwnRecords checks, against GetRecords, that each caller's shardId/sequenceNumber names the
// record it put, and that the stream holds those records and nothing else (but a blocker).
func requireOwnRecords(t *testing.T, stream string, onKinesalite bool, results []callerResult) {
	t.Helper()
	srv := localaws.Get(t)
	client := srv.KinesisClient()
	if onKinesalite {
		client = srv.KinesaliteClient()
	}
	written := recordsByPosition(t, client, stream)
	for _, r := range results {
		require.NoError(t, r.err, r.key)
		pos := r.resp.Metadata[respShardID] + "/" + r.resp.Metadata[respSequenceNumber]
		got, ok := written[pos]
		require.True(t, ok, "%s: no record at %s", r.key, pos)
		assert.Equal(t, r.key, got.PartitionKey, pos)
		assert.Equal(t, r.data, string(got.Data), pos)
	}
	for pos, rec := range written {
		if rec.PartitionKey == "blocker" {
			delete(written, pos)
		}
	}
	assert.Len(t, written, len(results), "each record written once, nothing else")
}

func TestCreateCoalescesConcurrentCallersAndAnswersEachWithItsOwnRecord(t *testing.T) {
	t.Parallel()
	for _, server := range []string{"kinesis-local", "kinesalite"} {
		t.Run(server, func(t *testing.T) {
			t.Parallel()
			var stream string
			var props map[string]string
			if server == "kinesalite" {
				stream = kinesaliteStream(t, 4)
				props = kinesaliteProps(t, stream)
			} else {
				stream = localaws.NewStream(t, 4)
				props = localProps(t, stream)
			}
			spy := newPutSpy()
			b := newBinding(t, props, spy.install)

			results := createConcurrently(t.Context(), b, keys("caller", 300), dataFor)

			requireOwnRecords(t, stream, server == "kinesalite", results)
			assert.Empty(t, spy.sent("PutRecord"), "create is coalesced into PutRecords")
			batches := spy.sent("PutRecords")
			t.Logf("%d callers in %d PutRecords requests", len(results), len(batches))
			assert.Less(t, len(batches), len(results)/4, "several callers per request")
			for _, r := range batches {
				assert.LessOrEqual(t, len(r.keys), maxBatchRecords)
			}
		})
	}
}

func TestCreateWithZeroLingerSendsOnePutRecordPerCall(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 2)
	spy := newPutSpy()
	b := newBinding(t, kinesaliteProps(t, stream, "batchLinger", "0"), spy.install)

	results := createConcurrently(t.Context(), b, keys("solo", 40), dataFor)

	requireOwnRecords(t, stream, true, results)
	assert.Len(t, spy.sent("PutRecord"), 40)
	assert.Empty(t, spy.sent("PutRecords"))
}

func TestCreateWithSequenceNumberForOrderingUsesPutRecord(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 1)
	spy := newPutSpy()
	b := newBinding(t, kinesaliteProps(t, stream), spy.install)

	first, err := create(t.Context(), b, []byte("first"), map[string]string{reqPartitionKey: "k"})
	require.NoError(t, err)
	second, err := create(t.Context(), b, []byte("second"), map[string]string{
		reqPartitionKey: "k", reqSequenceNumberForOrdering: first.Metadata[respSequenceNumber],
	})
	require.NoError(t, err)

	assert.Len(t, spy.sent("PutRecords"), 1, "the plain create is coalesced")
	assert.Len(t, spy.sent("PutRecord"), 1, "PutRecords has no SequenceNumberForOrdering")
	assert.Greater(t, second.Metadata[respSequenceNumber], first.Metadata[respSequenceNumber])
}

func TestCreateRetriesOnlyTheEntriesThatFailedRetryably(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 2)
	spy := newPutSpy()
	// Each retryable code fails its entries' first attempts; everything else passes at once.
	spy.fail = func(key string, attempt int) string {
		switch {
		case strings.HasPrefix(key, "throughput") && attempt <= 2:
			return codeThroughputExceeded
		case strings.HasPrefix(key, "kms") && attempt == 1:
			return codeKMSThrottling
		case strings.HasPrefix(key, "internal") && attempt == 1:
			return codeInternalFailure
		}
		return ""
	}
	b := newBinding(t, kinesaliteProps(t, stream, "batchLinger", "20ms"), spy.install)

	all := append(append(append(keys("ok", 40), keys("throughput", 5)...), keys("kms", 5)...), keys("internal", 5)...)
	results := createConcurrently(t.Context(), b, all, dataFor)

	requireOwnRecords(t, stream, true, results)
	sent := spy.sentKeys()
	for _, key := range all {
		want := 1
		switch {
		case strings.HasPrefix(key, "throughput"):
			want = 3
		case strings.HasPrefix(key, "kms"), strings.HasPrefix(key, "internal"):
			want = 2
		}
		assert.Equal(t, want, sent[key], "%s: only failed entries are sent again", key)
	}
}

func TestCreateNonRetryableEntryErrorGoesToItsOwnCallerOnly(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 2)
	spy := newPutSpy()
	spy.fail = func(key string, _ int) string {
		if key == "bad-0000" {
			return "KMSAccessDeniedException"
		}
		return ""
	}
	b := newBinding(t, kinesaliteProps(t, stream, "batchLinger", "1m"), spy.install)
	release := spy.blockWith(t, b)

	done := make(chan []callerResult)
	go func() { done <- createConcurrently(t.Context(), b, append(keys("good", 30), "bad-0000"), dataFor) }()
	testwait.Eventually(t, func() bool { return b.producer.Waiting() == 32 }, 10*time.Second, 5*time.Millisecond)
	release() // the server is idle again: the batch of 31 goes at once
	results := <-done

	var good []callerResult
	for _, r := range results {
		if r.key == "bad-0000" {
			require.Error(t, r.err)
			assert.Contains(t, r.err.Error(), "KMSAccessDeniedException")
			assert.Contains(t, r.err.Error(), "(the record was not written)")
			continue
		}
		good = append(good, r)
	}
	requireOwnRecords(t, stream, true, good)
	assert.Equal(t, 1, spy.sentKeys()["bad-0000"], "a non-retryable entry error is not retried")
	sent := spy.sent("PutRecords")
	require.Len(t, sent, 2, "the blocker, then one request for all 31")
	assert.Len(t, sent[1].keys, 31)
}

func TestCreateThrottledPastTheDeadlineFailsAtTheDeadline(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 1)
	spy := newPutSpy()
	spy.fail = func(string, int) string { return codeThroughputExceeded }
	b := newBinding(t, kinesaliteProps(t, stream), spy.install)
	described(t, b)

	ctx, cancel := context.WithTimeout(t.Context(), 400*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := create(ctx, b, []byte("never"), map[string]string{reqPartitionKey: "k"})
	took := time.Since(began)

	require.ErrorIs(t, err, ErrThrottled)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "(the record was not written)")
	assert.Less(t, took, 3*time.Second, "answered at the deadline, not after a retry budget of its own")
	assert.Greater(t, spy.sentKeys()["k"], 2, "throttling is retried until then")
}

func TestCreateCallerThatGivesUpIsAnsweredAtOnce(t *testing.T) {
	t.Parallel()

	t.Run("before its record is sent", func(t *testing.T) {
		t.Parallel()
		stream := kinesaliteStream(t, 1)
		spy := newPutSpy()
		b := newBinding(t, kinesaliteProps(t, stream, "batchLinger", "1m"), spy.install)
		release := spy.blockWith(t, b)

		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		began := time.Now()
		_, err := create(ctx, b, []byte("abandoned"), map[string]string{reqPartitionKey: "gone"})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(began), 30*time.Second, "not after the linger of a minute")
		assert.Contains(t, err.Error(), "(the record was not written)")

		// Its batch goes out once the server is idle, without the abandoned record.
		release()
		_, err = create(t.Context(), b, []byte("kept"), map[string]string{reqPartitionKey: "kept"})
		require.NoError(t, err)
		assert.Equal(t, map[string]int{"blocker": 1, "kept": 1}, spy.sentKeys())
		assert.Len(t, recordsByPosition(t, localaws.Get(t).KinesaliteClient(), stream), 2)
	})

	t.Run("while its request is in flight", func(t *testing.T) {
		t.Parallel()
		stream := kinesaliteStream(t, 1)
		spy := newPutSpy()
		// The linger only has to outlast the two callers joining one batch.
		b := newBinding(t, kinesaliteProps(t, stream, "batchLinger", "5s"), spy.install)
		release := spy.blockWith(t, b)
		spy.holdOnly = "" // from now on every request hangs until release
		waitingCallers := func(n int64) {
			testwait.Eventually(t, func() bool { return b.producer.Waiting() == n },
				10*time.Second, 5*time.Millisecond)
		}

		// Two callers share one request; one of them gives up while it hangs.
		patient := make(chan error, 1)
		go func() {
			_, err := create(t.Context(), b, []byte("patient"), map[string]string{reqPartitionKey: "patient"})
			patient <- err
		}()
		waitingCallers(2) // the blocker and the patient caller
		ctx, giveUp := context.WithCancelCause(t.Context())
		defer giveUp(nil)
		impatient := make(chan error, 1)
		go func() {
			_, err := create(ctx, b, []byte("impatient"), map[string]string{reqPartitionKey: "impatient"})
			impatient <- err
		}()
		waitingCallers(3)
		spy.waitArrived(t, 1) // their request, held by the spy
		giveUp(context.DeadlineExceeded)

		select {
		case err := <-impatient:
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Contains(t, err.Error(), "(the record may have been written)")
		case <-time.After(10 * time.Second):
			t.Fatal("the caller that gave up was kept waiting for the hanging request")
		}

		// The request outlives the caller that left and writes its record too. This is the case the
		// README warns about: had that caller retried, its record would be on the stream twice.
		release()
		require.NoError(t, <-patient)
		require.Len(t, spy.sent("PutRecords"), 2)
		assert.ElementsMatch(t, []string{"patient", "impatient"}, spy.sent("PutRecords")[1].keys)
		assert.Len(t, recordsByPosition(t, localaws.Get(t).KinesaliteClient(), stream), 3)
	})
}

func TestCloseFlushesBufferedRecordsAndAnswersEveryCaller(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 2)
	spy := newPutSpy()
	// A linger far longer than the test, and a request in flight: only Close can send these records.
	b := newBinding(t, kinesaliteProps(t, stream, "batchLinger", "1m"), spy.install)
	release := spy.blockWith(t, b)

	done := make(chan []callerResult)
	go func() { done <- createConcurrently(context.Background(), b, keys("waiting", 25), dataFor) }()
	testwait.Eventually(t, func() bool { return b.producer.Waiting() == 26 },
		5*time.Second, 5*time.Millisecond)

	closed := make(chan error)
	go func() { closed <- b.Close() }()
	results := <-done // answered while the blocker still hangs: Close sent them
	release()
	require.NoError(t, <-closed)
	requireOwnRecords(t, stream, true, results)
	assert.Len(t, spy.sent("PutRecords"), 2, "the blocker, then all 25 in one request")

	_, err := create(t.Context(), b, []byte("late"), nil)
	require.ErrorIs(t, err, ErrClosed)
	_, err = b.Invoke(t.Context(), &bindings.InvokeRequest{Operation: bulkCreateOperation, Data: []byte(`[{"data":1}]`)})
	require.ErrorIs(t, err, ErrClosed)
}

func TestCloseEndsRequestsStuckPastTheGracePeriod(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 1)
	spy := newPutSpy()
	spy.hold = make(chan struct{}) // never released: the server "hangs"
	b := newBinding(t, kinesaliteProps(t, stream), spy.install, func(b *AWSKinesis) { b.producerCloseGrace = 200 * time.Millisecond })

	done := make(chan []callerResult)
	go func() { done <- createConcurrently(context.Background(), b, keys("stuck", 5), dataFor) }()
	testwait.Eventually(t, func() bool { return b.producer.Waiting() == 5 }, 5*time.Second, time.Millisecond)

	began := time.Now()
	require.NoError(t, b.Close())
	assert.Less(t, time.Since(began), 2*time.Second, "the grace period, not the hanging request")
	for _, r := range <-done {
		require.ErrorIs(t, r.err, ErrClosed, r.key)
		assert.Contains(t, r.err.Error(), "(the record may have been written)")
	}
}
