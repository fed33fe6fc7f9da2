package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr/components-contrib/bindings"
)

// concurrencyCase is one line of the concurrencyPerShard table: a handler that takes handlerTime per
// record, records spread over keys partition keys.
type concurrencyCase struct {
	concurrency int
	handlerTime time.Duration
	keys        int
	records     int // pre-filled for the drain
	latency     int // put at latencyRate for the latency measurement
	latencyRate int
	// poison makes the first record of key 0 fail for ever: the drain then measures how far the other
	// keys get and the memory the stuck shard holds.
	poison bool
	// keyless writes the records without a partition key, to a stream set to place records itself
	// (the bench's endpoint must then be an AutoDistribution proxy); their order is not checked, as
	// none is promised.
	keyless bool
	auto    *localaws.AutoDistribution
}

type concurrencyResult struct {
	drainRate  float64
	delivered  int
	p50, p99   time.Duration
	violations int
	rssPeak    int64 // bytes
	// rssBefore is the RSS once the fill is put, before the binding starts; stuckHeap (poison case) is
	// the live heap after a GC at the end of the wait, with the poisoned shard at its cap: what the
	// stuck window and the running binding hold, apart from the bench's fill.
	rssBefore, stuckHeap int64
}

// orderCheck is the handler of a concurrency case: it sleeps handlerTime and counts, per key, the
// records that start while an earlier one of their key has not yet succeeded.
type orderCheck struct {
	hold      time.Duration
	poison    bool
	unordered bool // keyless records: no order to check

	mu         sync.Mutex
	running    map[uint32]bool
	next       map[uint32]uint32 // key → counter of the record that may start next
	violations int
	delivered  int
	lats       []time.Duration
	first      time.Time
	last       time.Time
	target     int
	done       chan struct{}
}

func newOrderCheck(hold time.Duration, poison bool) *orderCheck {
	return &orderCheck{hold: hold, poison: poison, running: map[uint32]bool{}, next: map[uint32]uint32{}, done: make(chan struct{})}
}

// expect resets the delivery count: the handler closes done after n more records.
func (o *orderCheck) expect(n int) <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.delivered, o.target, o.lats, o.done, o.first = 0, n, o.lats[:0], make(chan struct{}), time.Time{}
	return o.done
}

func (o *orderCheck) handle(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
	sent := time.Unix(0, int64(binary.BigEndian.Uint64(r.Data[:8])))
	key, counter := binary.BigEndian.Uint32(r.Data[8:12]), binary.BigEndian.Uint32(r.Data[12:16])
	o.mu.Lock()
	if !o.unordered && (o.running[key] || counter != o.next[key]) {
		o.violations++
	}
	o.running[key] = true
	o.mu.Unlock()

	time.Sleep(o.hold)
	if o.poison && key == 0 && counter == 0 {
		o.mu.Lock()
		o.running[key] = false
		o.mu.Unlock()
		return nil, errors.New("poison record")
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	o.running[key] = false
	o.next[key] = counter + 1
	o.lats = append(o.lats, time.Since(sent))
	o.last = time.Now()
	if o.first.IsZero() {
		o.first = o.last
	}
	o.delivered++
	if o.delivered == o.target {
		close(o.done)
	}
	return nil, nil
}

// keyedRecords returns n records over keys partition keys; each carries its put time (set by put),
// its key's index and its counter within the key.
type keyedRecords struct {
	keys     int
	counters []uint32
	size     int
	keyless  bool // the entries carry no partition key (the key index stays in the data)
}

func (k *keyedRecords) entries(n, from int) []types.PutRecordsRequestEntry {
	out := make([]types.PutRecordsRequestEntry, n)
	for i := range out {
		key := uint32((from + i) % k.keys)
		data := make([]byte, max(k.size, 16))
		binary.BigEndian.PutUint32(data[8:], key)
		binary.BigEndian.PutUint32(data[12:], k.counters[key])
		k.counters[key]++
		out[i] = types.PutRecordsRequestEntry{Data: data, PartitionKey: aws.String("key-" + strconv.Itoa(int(key)))}
		if k.keyless {
			out[i].PartitionKey = nil
		}
	}
	return out
}

// putAll puts entries in PutRecords calls of 500, stamping each with the time of its call.
func (b *bench) putAll(ctx context.Context, stream string, entries []types.PutRecordsRequestEntry) error {
	for len(entries) > 0 {
		n := min(500, len(entries))
		now := uint64(time.Now().UnixNano())
		for i := range entries[:n] {
			binary.BigEndian.PutUint64(entries[i].Data, now)
		}
		out, err := b.client.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries[:n]})
		if err != nil {
			return err
		}
		if f := aws.ToInt32(out.FailedRecordCount); f > 0 {
			return fmt.Errorf("%d records not put", f)
		}
		entries = entries[n:]
	}
	return nil
}

// runConcurrency drains a pre-filled stream with the case's handler, then puts records at a steady
// rate on the same stream to measure put-to-handler latency.
func (b *bench) runConcurrency(ctx context.Context, c concurrencyCase) (concurrencyResult, error) {
	var res concurrencyResult
	stream, err := b.newStream(ctx, "bench-conc")
	if err != nil {
		return res, err
	}
	if c.keyless {
		c.auto.SetStrategy(stream, true)
	}
	gen := &keyedRecords{keys: c.keys, counters: make([]uint32, c.keys), size: b.cfg.recordSize, keyless: c.keyless}
	if err = b.putAll(ctx, stream, gen.entries(c.records, 0)); err != nil {
		return res, fmt.Errorf("fill: %w", err)
	}
	debug.FreeOSMemory()
	res.rssBefore = rss()
	sampler := startRSSSampler()
	defer sampler.stop()

	check := newOrderCheck(c.handlerTime, c.poison)
	check.unordered = c.keyless
	want := c.records
	if c.poison {
		want = c.records - (c.records+c.keys-1)/c.keys // key 0 never passes its first record
	}
	drained := check.expect(want)
	b.extra = map[string]string{"concurrencyPerShard": strconv.Itoa(c.concurrency)}
	if c.poison {
		b.extra["retryMaxInterval"] = "100ms"
	}
	binding, _, err := b.startBinding(ctx, stream, "TRIM_HORIZON", check.handle)
	b.extra = nil
	if err != nil {
		return res, err
	}
	defer binding.Close()

	wait := 5 * time.Minute
	if c.poison {
		wait = 20 * time.Second // the shard holding the poison record stops at the cap
	}
	select {
	case <-drained:
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(wait):
		if !c.poison {
			return res, fmt.Errorf("the stream was not drained within %v", wait)
		}
	}
	check.mu.Lock()
	res.delivered = check.delivered
	// From the first delivery: the time to take the leases is the same for every case.
	res.drainRate = float64(check.delivered-1) / check.last.Sub(check.first).Seconds()
	check.mu.Unlock()
	if c.poison {
		res.rssPeak = sampler.stop()
		runtime.GC()
		var mem runtime.MemStats
		runtime.ReadMemStats(&mem)
		res.stuckHeap = int64(mem.HeapAlloc)
		check.mu.Lock()
		res.violations = check.violations
		check.mu.Unlock()
		return res, nil
	}

	latencyDone := check.expect(c.latency)
	tick := time.NewTicker(time.Second / 10)
	defer tick.Stop()
	perTick := max(c.latencyRate/10, 1)
	for put := 0; put < c.latency; put += perTick {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
		}
		if err := b.putAll(ctx, stream, gen.entries(min(perTick, c.latency-put), c.records+put)); err != nil {
			return res, fmt.Errorf("latency put: %w", err)
		}
	}
	select {
	case <-latencyDone:
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(2 * time.Minute):
		return res, errors.New("the latency records were not delivered within 2 minutes")
	}
	res.rssPeak = sampler.stop()
	check.mu.Lock()
	defer check.mu.Unlock()
	slices.Sort(check.lats)
	res.p50, res.p99 = pct(check.lats, 50), pct(check.lats, 99)
	res.violations = check.violations
	return res, nil
}

// rssSampler keeps the highest resident set size seen while it runs (Linux: /proc/self/status).
type rssSampler struct {
	quit chan struct{}
	done chan int64
	once sync.Once
	peak int64
}

func startRSSSampler() *rssSampler {
	s := &rssSampler{quit: make(chan struct{}), done: make(chan int64, 1)}
	go func() {
		var peak int64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			peak = max(peak, rss())
			select {
			case <-s.quit:
				s.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) stop() int64 {
	s.once.Do(func() {
		close(s.quit)
		s.peak = <-s.done
	})
	return s.peak
}

func rss() int64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// compareConcurrency runs every concurrencyPerShard value on every server and prints one table.
func compareConcurrency(ctx context.Context, cfg config, srv *localaws.Servers) error {
	fmt.Printf("kinesis-bench-read: concurrencyPerShard, %d-shard streams, %d keys, %d-byte records, handler %v, drain of %d records, latency at %d/s\n",
		cfg.shards, cfg.keys, cfg.recordSize, cfg.handlerTime, cfg.concRecords, cfg.latencyRate)
	fmt.Printf("%-14s %6s %11s %8s %8s %9s %9s %10s %9s\n", "server", "conc", "records/s", "x conc1", "x bound", "p50", "p99", "violations", "RSS peak")
	for server := range strings.SplitSeq(cfg.server, ",") {
		b, err := newBench(cfg, srv, server)
		if err != nil {
			return err
		}
		bare, err := b.serverDrainRate(ctx)
		if err != nil {
			return fmt.Errorf("%s: bare GetRecords loop: %w", server, err)
		}
		var first float64
		for _, n := range cfg.concurrency {
			r, err := b.runConcurrency(ctx, concurrencyCase{
				concurrency: n, handlerTime: cfg.handlerTime, keys: cfg.keys, records: cfg.concRecords,
				latency: cfg.latencyRecords, latencyRate: cfg.latencyRate,
			})
			if err != nil {
				return fmt.Errorf("%s, concurrencyPerShard %d: %w", server, n, err)
			}
			if first == 0 {
				first = r.drainRate
			}
			bound := min(bare, float64(cfg.shards)*float64(n)/cfg.handlerTime.Seconds())
			fmt.Printf("%-14s %6d %11.0f %7.1fx %7.2fx %9v %9v %10d %6d MiB\n",
				server, n, r.drainRate, r.drainRate/first, r.drainRate/bound, r.p50, r.p99, r.violations, r.rssPeak>>20)
		}
		fmt.Printf("%-14s server drain rate (bare GetRecords loop): %.0f records/s; bound = min(that, shards x conc / handler time)\n", server, bare)
		if cfg.keyless {
			if err := b.compareKeyless(ctx, server); err != nil {
				return fmt.Errorf("%s, keyless: %w", server, err)
			}
		}
		if cfg.poison {
			n := slices.Max(cfg.concurrency)
			r, err := b.runConcurrency(ctx, concurrencyCase{
				concurrency: n, handlerTime: cfg.handlerTime, keys: cfg.keys, records: cfg.poisonRecords, poison: true,
			})
			if err != nil {
				return fmt.Errorf("%s, poison: %w", server, err)
			}
			fmt.Printf("%-14s poison: concurrencyPerShard %d, %d records, key 0's first fails for ever: %d others delivered in 20 s, "+
				"RSS %d MiB before the binding, peak %d MiB, live heap when stuck %d MiB, violations %d\n",
				server, n, cfg.poisonRecords, r.delivered, r.rssBefore>>20, r.rssPeak>>20, r.stuckHeap>>20, r.violations)
		}
	}
	return nil
}

// serverDrainRate fills a stream and reads it with the bare GetRecords loop: the most the server
// gives a reader that keeps AWS's limits.
func (b *bench) serverDrainRate(ctx context.Context) (float64, error) {
	stream, err := b.newStream(ctx, "bench-bare")
	if err != nil {
		return 0, err
	}
	gen := &keyedRecords{keys: b.cfg.keys, counters: make([]uint32, b.cfg.keys), size: b.cfg.recordSize}
	if err = b.putAll(ctx, stream, gen.entries(b.cfg.concRecords, 0)); err != nil {
		return 0, err
	}
	took, err := b.bareLoop(ctx, stream)
	if err != nil {
		return 0, err
	}
	return float64(b.cfg.concRecords) / took.Seconds(), nil
}

// compareKeyless drains, side by side through the AUTO emulation, a stream of records over -keys
// keys and one of records without a key on a stream that places records itself, at the largest
// concurrencyPerShard: without a key, each record is a lane of its own, so the rates should match.
func (b *bench) compareKeyless(ctx context.Context, server string) error {
	auto, err := localaws.StartAutoDistribution(b.endpoint)
	if err != nil {
		return err
	}
	defer auto.Close()
	via := *b
	via.endpoint = auto.URL()
	via.client = b.srv.KinesisClient(func(o *kinesis.Options) { o.BaseEndpoint = aws.String(auto.URL()) })
	n := slices.Max(b.cfg.concurrency)
	var rates [2]float64
	for i, keyless := range []bool{false, true} {
		r, err := via.runConcurrency(ctx, concurrencyCase{
			concurrency: n, handlerTime: b.cfg.handlerTime, keys: b.cfg.keys, records: b.cfg.concRecords,
			latency: b.cfg.latencyRecords, latencyRate: b.cfg.latencyRate, keyless: keyless, auto: auto,
		})
		if err != nil {
			return err
		}
		rates[i] = r.drainRate
		what := fmt.Sprintf("%d keys", b.cfg.keys)
		if keyless {
			what = "keyless (AUTO)"
		}
		fmt.Printf("%-14s %-16s conc %d: %6.0f records/s, p50 %v, p99 %v, violations %d\n", server, what, n, r.drainRate, r.p50, r.p99, r.violations)
	}
	fmt.Printf("%-14s keyless / keyed drain rate: %.2fx\n", server, rates[1]/rates[0])
	return nil
}
