// Command kinesis-bench-queue measures mode queue against shared mode, side by side, on the local
// emulators and the test bed's queue server, which it starts itself. For each mode and each number
// of replicas (consumer processes, so that each RSS is its own), a fresh on-demand stream (4 shards
// on kinesis-local) is pre-filled and drained by handlers that take -handler-time per record, with
// -concurrency handler calls per replica (queueConcurrency, or concurrencyPerShard in shared mode).
// It prints records/s from the moment every replica runs to the last delivery, its ratio to the bound (the queue
// server's own ceiling, measured by a bare SDK receive/ack loop, or the handler calls that can run
// at once / handler time, whichever is lower: replicas x concurrency in queue mode, shards x
// concurrency in shared mode, where a shard runs its calls whichever replica owns it), duplicates,
// records lost, and the replicas' peak RSS. It prints figures; it asserts nothing.
//
//	go run ./cmd/kinesis-bench-queue
//	go run ./cmd/kinesis-bench-queue -replicas 1,2,4,8 -records 8000 -handler-time 10ms -concurrency 8
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/consumerproc"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

// shardsOnDemand is how many shards kinesis-local gives an on-demand stream.
const shardsOnDemand = 4

type config struct {
	replicas    []int
	modes       []string
	records     int
	handlerTime time.Duration
	concurrency int
	drainFor    time.Duration
}

func main() {
	if consumerproc.IsChild() {
		os.Exit(consumerproc.RunChild())
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kinesis-bench-queue:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg config
	replicas := flag.String("replicas", "1,2,4,8", "consumer processes per case, comma-separated")
	modes := flag.String("modes", "queue,shared", "modes to measure, side by side")
	flag.IntVar(&cfg.records, "records", 8000, "records pre-filled for each case")
	flag.DurationVar(&cfg.handlerTime, "handler-time", 10*time.Millisecond, "time the handler takes per record")
	flag.IntVar(&cfg.concurrency, "concurrency", 8, "handler calls at once per replica (queueConcurrency; concurrencyPerShard in shared mode)")
	flag.DurationVar(&cfg.drainFor, "drain-timeout", 3*time.Minute, "longest wait for a case to drain")
	timeout := flag.Duration("timeout", 30*time.Minute, "bound on the whole run")
	flag.Parse()
	for v := range strings.SplitSeq(*replicas, ",") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("-replicas: %q is not a positive number", v)
		}
		cfg.replicas = append(cfg.replicas, n)
	}
	cfg.modes = strings.Split(*modes, ",")

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := localaws.Start(ctx, localaws.Options{})
	if err != nil {
		return err
	}
	defer func() {
		if stopErr := srv.Stop(); stopErr != nil {
			fmt.Fprintln(os.Stderr, "kinesis-bench-queue:", stopErr)
		}
	}()
	queues, err := localaws.StartQueueServer(srv.KinesisEndpoint)
	if err != nil {
		return err
	}
	defer queues.Close()
	b := &bench{cfg: cfg, srv: srv, queues: queues}
	b.client = srv.KinesisClient(func(o *kinesis.Options) { o.BaseEndpoint = aws.String(queues.URL()) })
	if b.logDir, err = os.MkdirTemp("", "kinesis-bench-queue-"); err != nil {
		return err
	}
	return b.compare(ctx)
}

type bench struct {
	cfg    config
	srv    *localaws.Servers
	queues *localaws.QueueServer
	client *kinesis.Client // through the queue server
	logDir string
}

func (b *bench) compare(ctx context.Context) error {
	bare, err := b.bareLoop(ctx)
	if err != nil {
		return fmt.Errorf("bare receive/ack loop: %w", err)
	}
	fmt.Printf("kinesis-bench-queue: %d-shard on-demand streams, %d records, handler %v, %d calls at once per replica\n",
		shardsOnDemand, b.cfg.records, b.cfg.handlerTime, b.cfg.concurrency)
	fmt.Printf("queue server ceiling (bare SDK receive/ack loop, 8 pollers): %.0f records/s\n", bare)
	fmt.Printf("%-7s %8s %11s %9s %10s %6s %14s\n", "mode", "replicas", "records/s", "x bound", "duplicates", "lost", "RSS peak/repl")
	for _, mode := range b.cfg.modes {
		for _, n := range b.cfg.replicas {
			r, err := b.drain(ctx, mode, n)
			if err != nil {
				return fmt.Errorf("%s, %d replicas: %w", mode, n, err)
			}
			calls := n * b.cfg.concurrency // queue: per replica
			if mode == "shared" {
				calls = shardsOnDemand * b.cfg.concurrency // per shard, whoever owns it
			}
			bound := min(bare, float64(calls)/b.cfg.handlerTime.Seconds())
			fmt.Printf("%-7s %8d %11.0f %8.2fx %10d %6d %10d MiB\n", mode, n, r.rate, r.rate/bound, r.duplicates, r.lost, r.rssPeakKiB>>10)
		}
	}
	return nil
}

// newFilledStream creates an on-demand stream holding records "<prefix>-<i>".
func (b *bench) newFilledStream(ctx context.Context, prefix string) (string, error) {
	stream := localaws.UniqueName(prefix)
	direct := b.srv.KinesisClient()
	if err := b.srv.CreateOnDemandStream(ctx, direct, stream); err != nil {
		return "", err
	}
	for from := 0; from < b.cfg.records; from += 500 {
		entries := make([]types.PutRecordsRequestEntry, 0, 500)
		for i := from; i < min(from+500, b.cfg.records); i++ {
			entries = append(entries, types.PutRecordsRequestEntry{
				Data: []byte(prefix + "-" + strconv.Itoa(i)), PartitionKey: aws.String("k" + strconv.Itoa(i%1000)),
			})
		}
		out, err := direct.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
		if err != nil {
			return "", err
		}
		if aws.ToInt32(out.FailedRecordCount) > 0 {
			return "", fmt.Errorf("%d records not written", aws.ToInt32(out.FailedRecordCount))
		}
	}
	return stream, nil
}

type result struct {
	rate             float64
	duplicates, lost int
	rssPeakKiB       int
}

// tally counts the deliveries of one case.
type tally struct {
	mu     sync.Mutex
	count  map[string]int
	at     []time.Time // of each first delivery
	last   time.Time
	target int
	done   chan struct{}
}

func (t *tally) delivered(data string, at int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.count[data]++
	when := time.Unix(0, at)
	if t.count[data] == 1 {
		t.at = append(t.at, when)
	}
	if when.After(t.last) {
		t.last = when
	}
	if t.count[data] == 1 && len(t.count) == t.target {
		close(t.done)
	}
}

// drain runs n consumer processes of mode on a fresh pre-filled stream until every record was
// delivered, then stops them.
func (b *bench) drain(ctx context.Context, mode string, n int) (result, error) {
	prefix := mode + strconv.Itoa(n)
	stream, err := b.newFilledStream(ctx, prefix)
	if err != nil {
		return result{}, fmt.Errorf("fill: %w", err)
	}
	props := map[string]string{
		"streamName": stream, "consumerName": localaws.UniqueName("bench"), "mode": mode,
		"region": b.srv.Region, "endpoint": b.queues.URL(), "dynamoDBEndpoint": b.srv.DynamoDBEndpoint,
		"accessKey": localaws.AccessKeyID, "secretKey": localaws.SecretAccessKey,
		"initialPosition": "TRIM_HORIZON", "shardSyncInterval": "500ms",
		"queueConcurrency": strconv.Itoa(b.cfg.concurrency), "concurrencyPerShard": strconv.Itoa(b.cfg.concurrency),
	}
	t := &tally{count: map[string]int{}, target: b.cfg.records, done: make(chan struct{})}
	procs := make([]*consumerproc.Proc, 0, n)
	defer func() {
		for _, p := range procs {
			_ = p.Stop()
		}
	}()
	for i := range n {
		p, err := consumerproc.Start(fmt.Sprintf("%s-%d", prefix, i), props, b.cfg.handlerTime, b.logDir, t.delivered)
		if err != nil {
			return result{}, err
		}
		procs = append(procs, p)
	}
	// The rate counts from when every replica runs: the first ones start on the pre-filled stream
	// while the others are still starting.
	for _, p := range procs {
		if err := p.WaitReady(ctx); err != nil {
			return result{}, err
		}
	}
	allRunning := time.Now()
	var res result
	rssDone := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() { res.rssPeakKiB = sampleRSS(procs, rssDone) })
	select {
	case <-t.done:
	case <-ctx.Done():
		close(rssDone)
		sampler.Wait()
		return res, ctx.Err()
	case <-time.After(b.cfg.drainFor):
	}
	close(rssDone)
	sampler.Wait()
	time.Sleep(time.Second) // late duplicates, if any
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.count {
		res.duplicates += c - 1
	}
	res.lost = b.cfg.records - len(t.count)
	after := 0
	for _, at := range t.at {
		if !at.Before(allRunning) {
			after++
		}
	}
	if after > 1 {
		res.rate = float64(after) / t.last.Sub(allRunning).Seconds()
	}
	if res.lost > 0 {
		return res, fmt.Errorf("%d of %d records not delivered within %v (logs in %s)", res.lost, b.cfg.records, b.cfg.drainFor, b.logDir)
	}
	return res, nil
}

// sampleRSS returns the highest RSS any of procs had while it ran.
func sampleRSS(procs []*consumerproc.Proc, done <-chan struct{}) int {
	peak := 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, p := range procs {
			if kib, err := consumerproc.RSSKiB(p.PID()); err == nil {
				peak = max(peak, kib)
			}
		}
		select {
		case <-done:
			return peak
		case <-tick.C:
		}
	}
}

// bareLoop drains a pre-filled stream through a queue with plain SDK calls, acknowledging each
// record at once: the queue server's own ceiling.
func (b *bench) bareLoop(ctx context.Context) (float64, error) {
	stream, err := b.newFilledStream(ctx, "bare")
	if err != nil {
		return 0, err
	}
	sum, err := b.client.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
	if err != nil {
		return 0, err
	}
	created, err := b.client.CreateQueue(ctx, &kinesis.CreateQueueInput{
		QueueName: aws.String(localaws.UniqueName("bare")),
		StreamConfigurationList: []types.QueueStreamConfiguration{{
			StreamARN: sum.StreamDescriptionSummary.StreamARN, StartingPosition: &types.QueueStartingPosition{Type: types.QueueStartingPositionTypeTrimHorizon},
		}},
	})
	if err != nil {
		return 0, err
	}
	arn := created.QueueDescription.QueueARN
	if err := b.waitActive(ctx, arn); err != nil {
		return 0, err
	}
	var (
		mu          sync.Mutex
		seen        = map[string]bool{}
		first, last time.Time
		wg          sync.WaitGroup
		errs        = make([]error, 8)
	)
	for w := range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				finished := len(seen) == b.cfg.records
				mu.Unlock()
				if finished {
					return
				}
				out, err := b.client.ReceiveQueueRecords(ctx, &kinesis.ReceiveQueueRecordsInput{QueueARN: arn, Limit: aws.Int32(10), WaitTimeSeconds: aws.Int32(1)})
				if err != nil {
					errs[w] = err
					return
				}
				if len(out.QueueRecords) == 0 {
					continue
				}
				entries := make([]types.AcknowledgeQueueRecordsRequestEntry, len(out.QueueRecords))
				for i, r := range out.QueueRecords {
					entries[i] = types.AcknowledgeQueueRecordsRequestEntry{ReceiptHandle: r.ReceiptHandle}
				}
				if _, err := b.client.AcknowledgeQueueRecords(ctx, &kinesis.AcknowledgeQueueRecordsInput{QueueARN: arn, Entries: entries}); err != nil {
					errs[w] = err
					return
				}
				now := time.Now()
				mu.Lock()
				if first.IsZero() {
					first = now
				}
				last = now
				for _, r := range out.QueueRecords {
					seen[string(r.Data)] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return float64(len(seen)) / last.Sub(first).Seconds(), nil
}

func (b *bench) waitActive(ctx context.Context, arn *string) error {
	for ctx.Err() == nil {
		out, err := b.client.DescribeQueue(ctx, &kinesis.DescribeQueueInput{QueueARN: arn})
		if err != nil {
			return err
		}
		if out.QueueDescription.QueueStatus == types.QueueStatusActive {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return ctx.Err()
}
