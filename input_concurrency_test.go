package kinesis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/position"
	"github.com/dapr-kinesis/kinesis/internal/testlog"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
	"github.com/dapr/components-contrib/bindings"
)

// keyOrder is a handler that checks what an app relying on per-key order would: a key's records
// never overlap and none starts before the previous one of its key succeeded. Records are lane
// records (key = lane); fail decides the outcome of a record's attempt (from 1).
type keyOrder struct {
	hold time.Duration
	fail func(data string, attempt int) error

	mu         sync.Mutex
	attempts   map[string]int
	running    map[string]bool
	next       map[string]int // key → index of the record that may start next
	inFlight   map[string]int // shard → calls running
	peak       map[string]int
	runningSeq map[string]map[string]bool // shard → sequence numbers in flight
	violations []string
	delivered  []string
}

func newKeyOrder(hold time.Duration, fail func(string, int) error) *keyOrder {
	return &keyOrder{
		hold: hold, fail: fail, attempts: map[string]int{}, running: map[string]bool{}, next: map[string]int{},
		inFlight: map[string]int{}, peak: map[string]int{}, runningSeq: map[string]map[string]bool{},
	}
}

func (k *keyOrder) handle(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
	data := string(r.Data)
	prefix, lane, i, ok := parseLaneRecord(data)
	key := prefix + "|" + strconv.Itoa(lane)
	shard, seq := r.Metadata["shardId"], r.Metadata["sequenceNumber"]+"/"+r.Metadata["subSequenceNumber"]
	k.mu.Lock()
	switch {
	case !ok:
		k.violations = append(k.violations, "not a lane record: "+data)
	case k.running[key]:
		k.violations = append(k.violations, data+" started while its key ran")
	case i > k.next[key]:
		k.violations = append(k.violations, fmt.Sprintf("%s started before index %d of its key succeeded", data, k.next[key]))
	}
	k.running[key] = true
	k.attempts[data]++
	attempt := k.attempts[data]
	k.inFlight[shard]++
	k.peak[shard] = max(k.peak[shard], k.inFlight[shard])
	if k.runningSeq[shard] == nil {
		k.runningSeq[shard] = map[string]bool{}
	}
	k.runningSeq[shard][seq] = true
	k.mu.Unlock()

	time.Sleep(k.hold)
	var err error
	if k.fail != nil {
		err = k.fail(data, attempt)
	}

	k.mu.Lock()
	defer k.mu.Unlock()
	k.running[key] = false
	k.inFlight[shard]--
	delete(k.runningSeq[shard], seq)
	if err == nil {
		k.next[key] = max(k.next[key], i+1)
		k.delivered = append(k.delivered, data)
	}
	return nil, err
}

func (k *keyOrder) deliveries() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.delivered...)
}

func (k *keyOrder) waitFor(t *testing.T, sent []string, timeout time.Duration) {
	t.Helper()
	testwait.Eventually(t, func() bool { return len(missingFrom(sent, k.deliveries())) == 0 }, timeout, 50*time.Millisecond,
		"records not delivered")
}

// everyFifthFirstDeliveryFails fails the first delivery of every fifth record to arrive.
func everyFifthFirstDeliveryFails() func(string, int) error {
	var mu sync.Mutex
	firsts := 0
	return func(_ string, attempt int) error {
		if attempt > 1 {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		firsts++
		if firsts%5 == 0 {
			return errors.New("app unavailable")
		}
		return nil
	}
}

func concurrentBinding(t *testing.T, mode consumerMode, stream string, kv ...string) (*AWSKinesis, map[string]string) {
	t.Helper()
	props := withConsumer(localProps(t, stream), mode)
	props["shardSyncInterval"] = "200ms"
	props["retryInitialInterval"] = "20ms"
	props["retryMaxInterval"] = "100ms"
	for i := 0; i+1 < len(kv); i += 2 {
		props[kv[i]] = kv[i+1]
	}
	if mode == modeExtended {
		b, _ := newExtendedBinding(t, props)
		return b, props
	}
	return newBinding(t, props), props
}

// lastSeqs is the sequence number of each shard's last record.
func lastSeqs(t *testing.T, client *kinesis.Client, stream string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for shard, recs := range streamRecords(t, client, stream) {
		out[shard] = aws.ToString(recs[len(recs)-1].SequenceNumber)
	}
	return out
}

func TestConcurrentKeysKeepTheirOrderThroughFailuresAndLoseNothing(t *testing.T) {
	t.Parallel()
	for _, mode := range []consumerMode{modeShared, modeExtended} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			stream := localaws.NewStream(t, 2)
			client := localaws.Get(t).KinesisClient()
			b, props := concurrentBinding(t, mode, stream, "concurrencyPerShard", "8")
			h := newKeyOrder(5*time.Millisecond, everyFifthFirstDeliveryFails())
			require.NoError(t, b.Read(t.Context(), h.handle))

			sent, err := putLanes(t.Context(), client, stream, "k", 40, 0, 10)
			require.NoError(t, err)
			h.waitFor(t, sent, 60*time.Second)

			res := checkNoneLost(t, sent, h.deliveries())
			assert.Zero(t, res.duplicates, "every record succeeded once")
			h.mu.Lock()
			assert.Empty(t, h.violations)
			for shard, peak := range h.peak {
				assert.Greater(t, peak, 1, "shard %s ran calls concurrently", shard)
				assert.LessOrEqual(t, peak, 8, "shard %s: at most concurrencyPerShard calls", shard)
			}
			h.mu.Unlock()
			last := lastSeqs(t, client, stream)
			testwait.Eventually(t, func() bool {
				_, cps := shLeases(t, props["consumerName"])
				for shard, seq := range last {
					if cps[shard] != seq {
						return false
					}
				}
				return true
			}, 10*time.Second, 100*time.Millisecond, "the watermark reaches each shard's last record")
		})
	}
}

func TestConcurrentHotKeyIsDeliveredSerially(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	b, _ := concurrentBinding(t, modeShared, stream, "concurrencyPerShard", "16")
	h := newKeyOrder(2*time.Millisecond, nil)
	require.NoError(t, b.Read(t.Context(), h.handle))
	sent, err := putLanes(t.Context(), localaws.Get(t).KinesisClient(), stream, "hot", 1, 0, 100)
	require.NoError(t, err)
	h.waitFor(t, sent, 30*time.Second)
	h.mu.Lock()
	defer h.mu.Unlock()
	assert.Empty(t, h.violations)
	for shard, peak := range h.peak {
		assert.Equal(t, 1, peak, "shard %s: one key, one call at a time", shard)
	}
	assert.Equal(t, sent, h.delivered, "in sequence order")
}

// TestConcurrentKPLUserRecordsRunByTheirOwnKeys: the user records of one aggregate have keys of their
// own and run concurrently; the watermark inside an aggregate is written as seq:sub, and a restart
// delivers from there.
func TestConcurrentKPLUserRecordsRunByTheirOwnKeys(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	client := localaws.Get(t).KinesisClient()
	sent := make([]string, 0, 80)
	var lastSeq string
	for a := range 10 {
		data := make([]string, 8)
		for j := range data {
			data[j] = laneRecord("agg", j, a) // key agg-pk-j, one record of it per aggregate
		}
		sent = append(sent, data...)
		out, err := client.PutRecord(t.Context(), &kinesis.PutRecordInput{
			StreamName: aws.String(stream), PartitionKey: aws.String("agg"), Data: kplAggregate(t, data...),
		})
		require.NoError(t, err)
		lastSeq = aws.ToString(out.SequenceNumber)
	}
	// The last aggregate's user record 4 fails until the first binding closes.
	poison := laneRecord("agg", 4, 9)
	var healed sync.Once
	heal := make(chan struct{})
	fail := everyFifthFirstDeliveryFails()
	b, props := concurrentBinding(t, modeShared, stream, "concurrencyPerShard", "8")
	h := newKeyOrder(2*time.Millisecond, func(data string, attempt int) error {
		select {
		case <-heal:
		default:
			if data == poison {
				return errors.New("not yet")
			}
		}
		return fail(data, attempt)
	})
	require.NoError(t, b.Read(t.Context(), h.handle))
	h.waitFor(t, missingFrom(sent, []string{poison, laneRecord("agg", 5, 9), laneRecord("agg", 6, 9), laneRecord("agg", 7, 9)}), 30*time.Second)
	h.mu.Lock()
	assert.Empty(t, h.violations)
	assert.Greater(t, h.peak["shardId-000000000000"], 1, "user records of different keys ran concurrently")
	h.mu.Unlock()
	// Every user record but the poison one is delivered; the watermark stays just before it.
	h.waitFor(t, missingFrom(sent, []string{poison}), 30*time.Second)
	require.NoError(t, b.Close())
	_, cps := shLeases(t, props["consumerName"])
	assert.Equal(t, lastSeq+":3", cps["shardId-000000000000"])

	healed.Do(func() { close(heal) })
	again := newRecorder()
	b2 := newBinding(t, props)
	require.NoError(t, b2.Read(t.Context(), again.handle))
	want := []string{poison, laneRecord("agg", 5, 9), laneRecord("agg", 6, 9), laneRecord("agg", 7, 9)}
	again.waitFor(t, want, 30*time.Second)
	time.Sleep(time.Second)
	assert.ElementsMatch(t, want, again.deliveries(), "the restart delivers from the watermark inside the aggregate")
}

// TestConcurrentCloseLetsTheCallsInFlightFinishAndCheckpointsThem: Close waits for the calls in
// flight; the checkpoint written at Close covers the oldest of them, and a restart loses nothing.
func TestConcurrentCloseLetsTheCallsInFlightFinishAndCheckpointsThem(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	client := localaws.Get(t).KinesisClient()
	b, props := concurrentBinding(t, modeShared, stream, "concurrencyPerShard", "8")
	h := newKeyOrder(500*time.Millisecond, nil)
	require.NoError(t, b.Read(t.Context(), h.handle))
	sent, err := putLanes(t.Context(), client, stream, "c", 20, 0, 5)
	require.NoError(t, err)
	shard := "shardId-000000000000"
	testwait.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.delivered) >= 8 && h.inFlight[shard] == 8
	}, 30*time.Second, 5*time.Millisecond)
	h.mu.Lock()
	oldest := ""
	for seq := range h.runningSeq[shard] {
		if s := seq[:len(seq)-1]; oldest == "" || position.SeqLess(s, oldest) {
			oldest = s
		}
	}
	h.mu.Unlock()

	began := time.Now()
	require.NoError(t, b.Close())
	assert.Less(t, time.Since(began), 5*time.Second)
	h.mu.Lock()
	assert.Zero(t, h.inFlight[shard], "Close returned after the calls in flight")
	h.mu.Unlock()
	_, cps := shLeases(t, props["consumerName"])
	assert.False(t, position.SeqLess(cps[shard], oldest), "checkpoint %s covers %s, in flight when Close began", cps[shard], oldest)

	first := h.deliveries()
	b2 := newBinding(t, props)
	again := newRecorder()
	require.NoError(t, b2.Read(t.Context(), again.handle))
	again.waitFor(t, missingFrom(sent, first), 30*time.Second)
	checkNoneLost(t, sent, append(first, again.deliveries()...))
}

// lagClient reports the lag the test sets in every GetRecords answer: neither emulator reports
// MillisBehindLatest for an open shard (kinesalite only for a closed one, kinesis-local 0).
type lagClient struct {
	next aws.HTTPClient
	lag  atomic.Int64
	gets atomic.Int64
}

var millisBehindLatest = regexp.MustCompile(`"MillisBehindLatest":\s*\d+`)

func (c *lagClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := c.next.Do(req)
	if err != nil || !strings.HasSuffix(req.Header.Get("X-Amz-Target"), ".GetRecords") {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	c.gets.Add(1)
	body = millisBehindLatest.ReplaceAll(body, []byte(`"MillisBehindLatest":`+strconv.FormatInt(c.lag.Load(), 10)))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	resp.Header.Del("X-Amz-Crc32")
	return resp, nil
}

// TestConcurrentLagIsLoggedOnceAndSoIsCatchingUp: a shard whose reads report more lag than
// lagWarningThreshold logs one warning however many reads say so, and one info line once caught up.
func TestConcurrentLagIsLoggedOnceAndSoIsCatchingUp(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	log, buf := testlog.New(t)
	props := withConsumer(localProps(t, stream), modeShared)
	props["lagWarningThreshold"] = "2s"
	props["pollInterval"] = "200ms"
	fake := &lagClient{next: awshttp.NewBuildableClient()}
	fake.lag.Store(5000)
	b := newBinding(t, props, func(b *AWSKinesis) {
		b.logger = log
		b.sdkHTTPClient = fake
	})
	rec := newRecorder()
	require.NoError(t, b.Read(t.Context(), rec.handle))
	waitGets := func(n int64) {
		from := fake.gets.Load()
		testwait.Eventually(t, func() bool { return fake.gets.Load() >= from+n }, 20*time.Second, 20*time.Millisecond)
	}
	waitGets(5)
	assert.Equal(t, 1, buf.Count("behind its latest record, more than lagWarningThreshold"), "one warning, not one per read")
	assert.Contains(t, buf.String(), "millisBehindLatest=5000")
	fake.lag.Store(1500) // within the threshold, but not within half of it: still behind
	waitGets(3)
	assert.Zero(t, buf.Count("The shard has caught up"))
	fake.lag.Store(0)
	waitGets(5)
	assert.Equal(t, 1, buf.Count("The shard has caught up"))
	assert.Equal(t, 1, buf.Count("behind its latest record, more than lagWarningThreshold"))
}

// handoffWatch wraps a keyOrder for several replicas: it notes which replica ran each call and
// flags a replica starting a call on a shard while another replica's calls there still run.
type handoffWatch struct {
	order *keyOrder

	mu        sync.Mutex
	running   map[string]map[string]int // shard → replica → calls running
	started   map[string]map[string][]string
	succeeded map[string]map[string]bool // replica → data delivered
	overlaps  []string
}

func newHandoffWatch(order *keyOrder) *handoffWatch {
	return &handoffWatch{
		order: order, running: map[string]map[string]int{}, started: map[string]map[string][]string{},
		succeeded: map[string]map[string]bool{},
	}
}

func (w *handoffWatch) handler(replica string) bindings.Handler {
	return func(ctx context.Context, r *bindings.ReadResponse) ([]byte, error) {
		shard, data := r.Metadata["shardId"], string(r.Data)
		w.mu.Lock()
		if w.running[shard] == nil {
			w.running[shard] = map[string]int{}
			w.started[shard] = map[string][]string{}
		}
		for other, n := range w.running[shard] {
			if other != replica && n > 0 {
				w.overlaps = append(w.overlaps, fmt.Sprintf("%s started %s on %s while %d calls of %s ran there", replica, data, shard, n, other))
			}
		}
		w.running[shard][replica]++
		w.started[shard][replica] = append(w.started[shard][replica], data)
		w.mu.Unlock()

		out, err := w.order.handle(ctx, r)

		w.mu.Lock()
		defer w.mu.Unlock()
		w.running[shard][replica]--
		if err == nil {
			if w.succeeded[replica] == nil {
				w.succeeded[replica] = map[string]bool{}
			}
			w.succeeded[replica][data] = true
		}
		return out, err
	}
}

// TestConcurrentHandoffLetsTheCallsInFlightFinishAndHandsOverTheWatermark: a replica joining one
// that runs 8 calls per shard gets its share by handoff; the owner lets its calls in flight finish
// before the lease moves (no shard runs calls of both replicas at once, no key's record overlaps or
// overtakes an earlier one), and the checkpoint it hands over is its watermark: the joiner starts
// exactly at the oldest record the owner had not done, so nothing is lost and nothing before that
// record is delivered twice.
func TestConcurrentHandoffLetsTheCallsInFlightFinishAndHandsOverTheWatermark(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 2)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("chandoff")
	props := func(replica string) map[string]string {
		return shProps(t, stream, consumer, "workerID", replica, "leaseDuration", "10s", "concurrencyPerShard", "8")
	}
	sent, err := putLanes(t.Context(), client, stream, "ho", 16, 0, 6)
	require.NoError(t, err)
	// Calls outlast the joiner's start (a second at most here), so one that ran on past the handoff
	// would overlap the joiner's.
	watch := newHandoffWatch(newKeyOrder(time.Second, nil))

	shStart(t, props("r1"), watch.handler("r1"))
	testwait.Eventually(t, func() bool {
		watch.mu.Lock()
		defer watch.mu.Unlock()
		busy := 0
		for _, byReplica := range watch.running {
			if byReplica["r1"] >= 4 {
				busy++
			}
		}
		return busy == 2 && len(watch.succeeded["r1"]) >= 8
	}, 30*time.Second, 5*time.Millisecond, "r1 runs calls concurrently on both shards")

	shStart(t, props("r2"), watch.handler("r2"))
	testwait.Eventually(t, func() bool {
		c := ownedBy(shOwners(t, consumer))
		return c["r1"] == 1 && c["r2"] == 1 && shClaims(t, consumer) == 0
	}, 20*time.Second, 50*time.Millisecond, "the joiner gets its share by handoff")
	watch.order.waitFor(t, sent, 60*time.Second)

	watch.mu.Lock()
	defer watch.mu.Unlock()
	assert.Empty(t, watch.overlaps, "the owner's calls in flight end before the joiner's start")
	watch.order.mu.Lock()
	assert.Empty(t, watch.order.violations, "per-key order across the handoff")
	watch.order.mu.Unlock()
	handedOver := 0
	for shard, recs := range streamRecords(t, client, stream) {
		joined := watch.started[shard]["r2"]
		if len(joined) == 0 {
			continue
		}
		handedOver++
		require.NotEmpty(t, watch.started[shard]["r1"], "%s was r1's before the handoff", shard)
		first := map[string]bool{}
		for _, d := range joined {
			first[d] = true
		}
		oldestNotDone, joinerFirst := "", ""
		for _, r := range recs {
			d := string(r.Data)
			if oldestNotDone == "" && !watch.succeeded["r1"][d] {
				oldestNotDone = d
			}
			if joinerFirst == "" && first[d] {
				joinerFirst = d
			}
		}
		assert.Equal(t, oldestNotDone, joinerFirst,
			"on %s the joiner starts at the oldest record the owner had not done (%d calls of r1, %d of r2)",
			shard, len(watch.started[shard]["r1"]), len(joined))
	}
	assert.Equal(t, 1, handedOver, "one shard changed hands")
}
