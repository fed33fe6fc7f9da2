package kinesis

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dapr-kinesis/kinesis/internal/testwait"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"
)

// The limit tests hold a request in flight and use a linger of a minute: a request that goes out
// while the blocker hangs went out because it was full.

func TestBatchGoesOutAtFiveHundredEntries(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 2)
	spy := newPutSpy()
	b := newBinding(t, kinesaliteProps(t, stream, "batchLinger", "1m"), spy.install)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	release := spy.blockWith(t, b)

	done := make(chan []callerResult)
	go func() { done <- createConcurrently(ctx, b, keys("entry", maxBatchRecords+1), dataFor) }()
	// 500 are answered by the full request; one waits with the blocker's caller.
	testwait.Eventually(t, func() bool {
		return len(spy.sent("PutRecords")) == 2 && b.producer.Waiting() == 2
	}, 20*time.Second, 10*time.Millisecond)
	release() // the server is idle: the last record goes at once

	requireOwnRecords(t, stream, true, <-done)
	sent := spy.sent("PutRecords")
	require.Len(t, sent, 3)
	assert.Len(t, sent[1].keys, maxBatchRecords)
	assert.Len(t, sent[2].keys, 1)
}

func TestBatchGoesOutAtFiveMiBIncludingPartitionKeys(t *testing.T) {
	t.Parallel()
	// Five records of exactly 1 MiB of data plus key fill a request; a sixth byte-sized record
	// then needs a second one. Keys are counted: with them left out the first request would be short.
	key := func(i int) string { return fmt.Sprintf("mib-%d", i) }
	mib := func(i int) string {
		return string(bytes.Repeat([]byte{'a' + byte(i)}, defaultMaxRecordSize-len(key(i))))
	}

	stream := kinesaliteStream(t, 2)
	spy := newPutSpy()
	b := newBinding(t, kinesaliteProps(t, stream, "batchLinger", "1m"), spy.install)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	release := spy.blockWith(t, b)
	defer release()

	var ks []string
	for i := range 5 {
		ks = append(ks, key(i))
	}
	data := func(k string) string {
		var i int
		_, _ = fmt.Sscanf(k, "mib-%d", &i)
		return mib(i)
	}
	results := createConcurrently(ctx, b, ks, data) // returns only because the request was full
	require.Len(t, spy.sent("PutRecords"), 2)
	assert.Equal(t, maxBatchBytes, spy.sent("PutRecords")[1].bytes)

	// One byte over: 4 MiB of the same records, one 1 MiB record short by 2 bytes, and a 3-byte one.
	spy2 := newPutSpy()
	stream2 := kinesaliteStream(t, 2)
	b2 := newBinding(t, kinesaliteProps(t, stream2, "batchLinger", "1m"), spy2.install)
	release2 := spy2.blockWith(t, b2)
	done := make(chan []callerResult)
	go func() {
		done <- createConcurrently(ctx, b2, append(ks, "x"), func(k string) string {
			switch k {
			case "x":
				return "yz" // 3 bytes with its key
			case key(4):
				return data(k)[2:]
			}
			return data(k)
		})
	}()
	// The six cannot share a request: the first goes when the record that does not fit arrives.
	testwait.Eventually(t, func() bool { return len(spy2.sent("PutRecords")) == 2 }, 20*time.Second, 5*time.Millisecond)
	release2() // the rest goes once the server is idle
	results2 := <-done

	requireOwnRecords(t, stream, true, results)
	requireOwnRecords(t, stream2, true, results2)
	sent := spy2.sent("PutRecords")[1:]
	require.Len(t, sent, 2)
	assert.Equal(t, maxBatchBytes+1, sent[0].bytes+sent[1].bytes)
	for _, r := range sent {
		assert.LessOrEqual(t, r.bytes, maxBatchBytes)
	}
}

func TestCreateChecksTheStreamsMaximumRecordSizeIncludingTheKey(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 1)
	spy := newPutSpy()
	b := newBinding(t, kinesaliteProps(t, stream), spy.install)

	_, err := create(t.Context(), b, bytes.Repeat([]byte("x"), defaultMaxRecordSize-1), map[string]string{reqPartitionKey: "k"})
	require.NoError(t, err, "1 MiB with the key is allowed")
	_, err = create(t.Context(), b, bytes.Repeat([]byte("x"), defaultMaxRecordSize), map[string]string{reqPartitionKey: "k"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exceeds the stream's maximum record size of 1048576 bytes")
	assert.Len(t, spy.sent("PutRecords"), 1, "the oversized record was never sent")
}

func TestBatchRequestsInFlightAreBounded(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{1, 3} {
		t.Run(fmt.Sprintf("maxInFlightBatches=%d", limit), func(t *testing.T) {
			t.Parallel()
			stream := kinesaliteStream(t, 2)
			spy := newPutSpy()
			spy.delay = 80 * time.Millisecond
			b := newBinding(t, kinesaliteProps(t, stream, "batchLinger", "1ms", "maxInFlightBatches", strconv.Itoa(limit)), spy.install)

			// Callers arrive spread out, so that without the bound each would get a request of its own.
			var wg sync.WaitGroup
			results := make([]callerResult, 30)
			for i := range results {
				wg.Go(func() {
					time.Sleep(time.Duration(i) * 8 * time.Millisecond)
					k := fmt.Sprintf("spread-%02d", i)
					resp, err := create(t.Context(), b, []byte(dataFor(k)), map[string]string{reqPartitionKey: k})
					results[i] = callerResult{key: k, data: dataFor(k), resp: resp, err: err}
				})
			}
			wg.Wait()

			requireOwnRecords(t, stream, true, results)
			assert.Equal(t, limit, spy.peakInFlight())
			assert.Less(t, len(spy.sent("PutRecords")), 30, "records wait in a growing batch while every slot is taken")
		})
	}
}

// TestProducerStopsItsGoroutinesOnClose runs every producer path (coalesced, retried, bulk, a request
// cut off by Close) and checks that Close leaves no goroutine behind. It is not parallel: goleak
// compares against the goroutines that exist when it starts.
func TestProducerStopsItsGoroutinesOnClose(t *testing.T) {
	stream := kinesaliteStream(t, 2) // starts the servers and their goroutines first
	spy := newPutSpy()
	spy.fail = func(key string, attempt int) string {
		if key == "throttled" && attempt == 1 {
			return codeThroughputExceeded
		}
		return ""
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	defer spy.client.CloseIdleConnections() // runs before VerifyNone: keep-alive conns are the spy's

	b := NewAWSKinesis(logger.NewLogger(t.Name())).(*AWSKinesis)
	spy.install(b)
	b.producerCloseGrace = 100 * time.Millisecond
	props := kinesaliteProps(t, stream, "batchLinger", "5ms")
	require.NoError(t, b.Init(t.Context(), bindings.Metadata{Base: metadata.Base{Properties: props}}))

	results := createConcurrently(t.Context(), b, append(keys("leak", 50), "throttled"), dataFor)
	for _, r := range results {
		require.NoError(t, r.err)
	}
	resp, err := b.Invoke(t.Context(), &bindings.InvokeRequest{
		Operation: bulkCreateOperation, Data: []byte(bulkPayload(600, strconv.Itoa)),
	})
	require.NoError(t, err)
	assert.Equal(t, "0", resp.Metadata[respFailedCount])

	// A request that hangs until Close gives up on it.
	spy.drainArrived()
	spy.hold = make(chan struct{})
	stuck := make(chan error, 1)
	go func() { _, err := create(context.Background(), b, []byte("stuck"), nil); stuck <- err }()
	spy.waitArrived(t, 1)
	require.NoError(t, b.Close())
	require.ErrorIs(t, <-stuck, ErrClosed)
}
