package delivery

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"

	"github.com/dapr-kinesis/kinesis/internal/testwait"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/kit/logger"
)

// keyed builds n records with sequence numbers 1000.. and keys key(i).
func keyed(n int, key func(i int) string) []types.Record {
	recs := make([]types.Record, n)
	for i := range recs {
		seq := strconv.Itoa(1000 + i)
		recs[i] = types.Record{SequenceNumber: aws.String(seq), PartitionKey: aws.String(key(i)), Data: []byte("rec-" + seq)}
	}
	return recs
}

// orderWatch is a handler that checks, as an app would, that a key's records never overlap and
// succeed in sequence order; fail decides each call's outcome (attempt counts from 1).
type orderWatch struct {
	hold time.Duration
	fail func(seq string, attempt int) error

	mu         sync.Mutex
	attempts   map[string]int
	running    map[string]string // key → sequence number in flight
	done       map[string][]string
	inFlight   int
	peak       int
	keyless    int // calls whose metadata had no partitionKey
	violations []string
}

func newOrderWatch(hold time.Duration, fail func(seq string, attempt int) error) *orderWatch {
	return &orderWatch{hold: hold, fail: fail, attempts: map[string]int{}, running: map[string]string{}, done: map[string][]string{}}
}

func (o *orderWatch) handle(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
	seq := r.Metadata[MetaSequenceNumber]
	key, hasKey := r.Metadata[MetaPartitionKey]
	if !hasKey { // written without a key: no order is promised, so it is a key of its own
		key = "no key, " + seq
	}
	o.mu.Lock()
	if !hasKey {
		o.keyless++
	}
	if other, busy := o.running[key]; busy {
		o.violations = append(o.violations, fmt.Sprintf("%s started while %s of key %s ran", seq, other, key))
	}
	if prev := o.done[key]; len(prev) > 0 && prev[len(prev)-1] >= seq {
		o.violations = append(o.violations, fmt.Sprintf("%s started after %s of key %s", seq, prev[len(prev)-1], key))
	}
	o.running[key] = seq
	o.attempts[seq]++
	attempt := o.attempts[seq]
	o.inFlight++
	o.peak = max(o.peak, o.inFlight)
	o.mu.Unlock()

	time.Sleep(o.hold)
	var err error
	if o.fail != nil {
		err = o.fail(seq, attempt)
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	o.inFlight--
	delete(o.running, key)
	if err == nil {
		o.done[key] = append(o.done[key], seq)
	}
	return nil, err
}

func (o *orderWatch) delivered() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, seqs := range o.done {
		n += len(seqs)
	}
	return n
}

func TestConcurrentKeysKeepTheirOrderThroughFailures(t *testing.T) {
	t.Parallel()
	// Every 5th record fails its first delivery: its key waits, the others go on.
	watch := newOrderWatch(2*time.Millisecond, func(seq string, attempt int) error {
		if n, _ := strconv.Atoi(seq); n%5 == 0 && attempt == 1 {
			return errors.New("app unavailable")
		}
		return nil
	})
	sh := NewShard(watch.handle, Settings{RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond, Concurrency: 8}, testShard, "", logger.NewLogger(t.Name()))
	recs := keyed(400, func(i int) string { return "key-" + strconv.Itoa(i%20) })

	cp, complete := drive(sh, t.Context(), t.Context(), recs)

	assert.True(t, complete)
	assert.Equal(t, "1399", cp)
	assert.Empty(t, watch.violations)
	assert.Equal(t, 400, watch.delivered(), "every record succeeded once")
	assert.Equal(t, 8, watch.peak, "up to concurrencyPerShard calls at once")
}

func TestOneHotKeyIsDeliveredSerially(t *testing.T) {
	t.Parallel()
	watch := newOrderWatch(time.Millisecond, nil)
	sh := NewShard(watch.handle, Settings{RetryInitial: time.Millisecond, Concurrency: 32}, testShard, "", logger.NewLogger(t.Name()))

	_, complete := drive(sh, t.Context(), t.Context(), keyed(100, func(int) string { return "hot" }))

	assert.True(t, complete)
	assert.Empty(t, watch.violations)
	assert.Equal(t, 1, watch.peak)
	assert.Equal(t, 100, watch.delivered())
}

func TestRecordsWithoutAKeyEachRunInALaneOfTheirOwn(t *testing.T) {
	t.Parallel()
	// A stream that places records itself (AUTO) may hold records written without a partition key
	// next to keyed ones. Every 3rd record fails its first delivery.
	watch := newOrderWatch(5*time.Millisecond, func(seq string, attempt int) error {
		if n, _ := strconv.Atoi(seq); n%3 == 0 && attempt == 1 {
			return errors.New("app unavailable")
		}
		return nil
	})
	sh := NewShard(watch.handle, Settings{RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond, Concurrency: 8}, testShard, "", logger.NewLogger(t.Name()))
	recs := keyed(200, func(int) string { return "hot" })
	for i := range recs {
		if i%4 != 0 {
			recs[i].PartitionKey = nil
		}
	}

	cp, complete := drive(sh, t.Context(), t.Context(), recs)

	assert.True(t, complete)
	assert.Equal(t, "1199", cp)
	assert.Empty(t, watch.violations, "the keyed records keep their order")
	assert.Equal(t, 200, watch.delivered())
	assert.Equal(t, 8, watch.peak, "keyless records do not wait for each other")
	assert.GreaterOrEqual(t, watch.keyless, 150, "no partitionKey in their metadata (retries counted too)")
}

func TestConcurrencyOneKeepsTheShardsOrderAcrossKeys(t *testing.T) {
	t.Parallel()
	h, _ := failingOn("never")
	var failed bool
	h.fail = func(_ int, r *bindings.ReadResponse) error {
		if string(r.Data) == "rec-1001" && !failed {
			failed = true
			return errors.New("app unavailable")
		}
		return nil
	}
	sh := newTestShard(h, logger.NewLogger(t.Name()), Settings{Concurrency: 1}, "")

	_, complete := drive(sh, t.Context(), t.Context(), keyed(4, func(i int) string { return "key-" + strconv.Itoa(i) }))

	assert.True(t, complete)
	assert.Equal(t, []string{"rec-1000", "rec-1001", "rec-1001", "rec-1002", "rec-1003"}, h.data(),
		"a failing record holds back the later records of every key")
}

// poisoned runs a shard whose record 1000 (key "poison") fails until heal is closed.
func poisoned(t *testing.T, s Settings, recs []types.Record) (sh *Shard, watch *orderWatch, heal chan struct{}, stop context.CancelFunc, finished <-chan string) {
	t.Helper()
	heal = make(chan struct{})
	watch = newOrderWatch(0, func(seq string, _ int) error {
		select {
		case <-heal:
			return nil
		default:
		}
		if seq == "1000" {
			return errors.New("poison")
		}
		return nil
	})
	s.RetryInitial, s.RetryMax = time.Millisecond, 2*time.Millisecond
	sh = NewShard(watch.handle, s, testShard, "", logger.NewLogger(t.Name()))
	ctx, cancel := context.WithCancel(t.Context())
	out := make(chan string, 1)
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		cp, _ := drive(sh, ctx, ctx, recs)
		out <- cp
	}()
	t.Cleanup(func() {
		cancel()
		<-returned // the handler's calls end with the test, not after it
	})
	return sh, watch, heal, cancel, out
}

func TestAFailingRecordHoldsTheWatermarkAndOnlyItsKey(t *testing.T) {
	t.Parallel()
	recs := keyed(50, func(i int) string {
		if i%10 == 0 {
			return "poison"
		}
		return "key-" + strconv.Itoa(i)
	})
	_, watch, heal, _, finished := poisoned(t, Settings{Concurrency: 4}, recs)

	// The other 45 keys' records are delivered while the poison key's first record keeps failing.
	testwait.Eventually(t, func() bool { return watch.delivered() == 45 }, 5*time.Second, time.Millisecond)
	select {
	case cp := <-finished:
		t.Fatalf("delivery ended with the poison record failing (checkpoint %q)", cp)
	default:
	}
	close(heal)
	select {
	case cp := <-finished:
		assert.Equal(t, "1049", cp)
	case <-time.After(5 * time.Second):
		t.Fatal("the healed key's records were not delivered")
	}
	assert.Equal(t, 50, watch.delivered())
	assert.Empty(t, watch.violations)
}

func TestTheWatermarkNeverPassesAFailingRecord(t *testing.T) {
	t.Parallel()
	h := newOrderWatch(0, func(seq string, _ int) error {
		if seq == "1002" {
			return errors.New("app unavailable")
		}
		return nil
	})
	sh := NewShard(h.handle, Settings{RetryInitial: time.Millisecond, Concurrency: 4}, testShard, "", logger.NewLogger(t.Name()))
	stop, cancel := context.WithCancel(t.Context())
	go func() {
		defer cancel()
		for deadline := time.Now().Add(5 * time.Second); h.delivered() < 9 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}()

	cp, complete := drive(sh, stop, t.Context(), keyed(10, func(i int) string { return "key-" + strconv.Itoa(i) }))

	assert.False(t, complete)
	assert.Equal(t, 9, h.delivered())
	assert.Equal(t, "1001", cp, "the records after the failing one are done, but the checkpoint stays before it")
}

// driveCapped runs the contract as the engine does when records arrive faster than they are done: it
// adds one record whenever the contract has room. It returns how many records it added once stop
// ended.
func driveCapped(sh *Shard, stop context.Context, recs []types.Record) int {
	added := 0
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for stop.Err() == nil && (added < len(recs) || !sh.Idle()) {
		for added < len(recs) && !sh.Full() {
			sh.Add(recs[added : added+1])
			added++
		}
		if due := sh.Dispatch(stop, stop); !due.IsZero() {
			retry.Reset(time.Until(due))
		}
		select {
		case r := <-sh.Finished():
			sh.Complete(stop, r)
		case <-retry.C:
		case <-stop.Done():
		}
	}
	for sh.InFlight() > 0 {
		sh.Complete(stop, <-sh.Finished())
	}
	return added
}

func TestThePendingCapPausesReadingButNotOtherKeys(t *testing.T) {
	t.Parallel()
	watch := newOrderWatch(0, func(seq string, _ int) error {
		if seq == "1000" {
			return errors.New("poison")
		}
		return nil
	})
	sh := NewShard(watch.handle, Settings{RetryInitial: time.Millisecond, RetryMax: 2 * time.Millisecond, Concurrency: 4, MaxPending: 20},
		testShard, "", logger.NewLogger(t.Name()))
	stop, cancel := context.WithCancel(t.Context())
	added := make(chan int, 1)
	go func() {
		added <- driveCapped(sh, stop, keyed(40, func(i int) string { return "key-" + strconv.Itoa(i%7) }))
	}()

	// Key 0 holds record 1000, which fails for ever; the other keys go on until 20 records are read.
	testwait.Eventually(t, func() bool { return watch.delivered() == 17 }, 5*time.Second, time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, 17, watch.delivered(), "nothing more is read while the window is full")
	cancel()
	assert.Equal(t, 20, <-added)
	assert.Empty(t, sh.Checkpoint(), "nothing is done before the poison record")
}

func TestThePendingBytesCapCountsRecordsNotYetDone(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	sh := NewShard(func(context.Context, *bindings.ReadResponse) ([]byte, error) {
		<-gate
		return nil, nil
	}, Settings{RetryInitial: time.Millisecond, Concurrency: 2, MaxPendingBytes: 5 * len("rec-1000key-1")}, testShard, "", logger.NewLogger(t.Name()))
	recs := keyed(10, func(i int) string { return "key-" + strconv.Itoa(i%10) })
	added := 0
	for ; !sh.Full(); added++ {
		sh.Add(recs[added : added+1])
	}
	assert.Equal(t, 5, added)
	sh.Dispatch(t.Context(), t.Context())
	close(gate)
	for range 2 {
		select {
		case r := <-sh.Finished():
			sh.Complete(t.Context(), r)
		case <-time.After(5 * time.Second):
			t.Fatal("two calls of different keys did not both run")
		}
	}
	assert.False(t, sh.Full(), "done records free their bytes")
	assert.Equal(t, "1001", sh.Checkpoint())
}
