// Command kinesis-bench-read measures the shared-mode input binding against local emulators it starts
// itself, each measurement on a fresh 4-shard stream:
//
//   - latency: records are put at a steady rate on a stream the binding already reads; for each, the
//     time from just before its PutRecords call to the handler receiving it (p50, p99, max);
//   - drain: a stream is filled first, then read twice from TRIM_HORIZON: by a bare GetRecords loop
//     that keeps AWS's limits (per shard at most 5 calls a second, 10,000 records a call), and by the
//     binding; each rate is the records read from the start of the read (Read's call for the binding)
//     to the last record, per second, and the ratio of the two is printed.
//
// The handler does no work, so the figures are the binding's (and the emulator's) alone.
//
// With -concurrency, it measures concurrencyPerShard instead, on each server of -server, side by
// side: for each value, a stream pre-filled with records over -keys partition keys is drained by a
// handler that takes -handler-time per record (records/s from the first delivery to the last, and
// its ratios to the first value and to the bound: the server's own drain rate, measured by a bare
// GetRecords loop, or shards x value / handler time, whichever is lower), then
// records put at -latency-rate give put-to-handler p50/p99; every case counts order violations (a
// record starting before the previous one of its key succeeded) and the process's peak RSS. With
// -poison, one more case where one key's first record fails for ever shows how far the other keys
// get and what memory the stuck shard holds. With -keyless, the largest value is run twice more,
// side by side, through the test bed's AUTO record distribution emulation: records written without
// a partition key on a stream that places records itself, against records over -keys keys.
//
//	go run ./cmd/kinesis-bench-read
//	go run ./cmd/kinesis-bench-read -server kinesalite,kinesis-local -handler-time 10ms -concurrency 1,8,32,128 -poison
//	go run ./cmd/kinesis-bench-read -server kinesalite -handler-time 10ms -concurrency 32 -keyless
//	go run ./cmd/kinesis-bench-read -server kinesalite -drain-records 100000
//	go run ./cmd/kinesis-bench-read -shards 64 -drain-records 0
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	kb "github.com/dapr-kinesis/kinesis"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"
)

type config struct {
	shards         int32
	server         string
	recordSize     int
	latencyRecords int
	latencyRate    int
	drainRecords   int
	pollInterval   string
	maxRecords     string

	concurrency   []int
	handlerTime   time.Duration
	keys          int
	concRecords   int
	poison        bool
	poisonRecords int
	keyless       bool
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kinesis-bench-read:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg config
	flag.StringVar(&cfg.server, "server", "kinesis-local", "Kinesis emulator: kinesis-local or kinesalite")
	shards := flag.Int("shards", 4, "shards per stream")
	flag.IntVar(&cfg.recordSize, "record-size", 1024, "bytes per record")
	flag.IntVar(&cfg.latencyRecords, "latency-records", 400, "records put for the latency measurement")
	flag.IntVar(&cfg.latencyRate, "latency-rate", 40, "records per second put for the latency measurement")
	flag.IntVar(&cfg.drainRecords, "drain-records", 10000, "records put before the drain measurement")
	flag.StringVar(&cfg.pollInterval, "poll-interval", "", "binding pollInterval (default: the binding's)")
	flag.StringVar(&cfg.maxRecords, "max-records", "", "binding maxRecords (default: the binding's)")
	concurrency := flag.String("concurrency", "", "comma-separated concurrencyPerShard values to compare (e.g. 1,8,32,128); empty: latency and drain")
	flag.DurationVar(&cfg.handlerTime, "handler-time", 10*time.Millisecond, "with -concurrency: time the handler takes per record")
	flag.IntVar(&cfg.keys, "keys", 1000, "with -concurrency: partition keys")
	flag.IntVar(&cfg.concRecords, "concurrency-records", 10000, "with -concurrency: records pre-filled for each drain")
	flag.BoolVar(&cfg.poison, "poison", false, "with -concurrency: add a case at the largest value where one record fails for ever")
	flag.IntVar(&cfg.poisonRecords, "poison-records", 80000, "with -poison: records pre-filled")
	flag.BoolVar(&cfg.keyless, "keyless", false, "with -concurrency: add keyless records against -keys keys at the largest value, side by side")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on the whole run")
	flag.Parse()
	cfg.shards = int32(*shards)
	if cfg.recordSize < 16 {
		return errors.New("-record-size must be at least 16 (the send time, key and counter are in the record)")
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *concurrency != "" && !set["latency-rate"] {
		cfg.latencyRate = 1000 // above what one call at a time per shard keeps up with at 10 ms
	}
	if *concurrency != "" && !set["latency-records"] {
		cfg.latencyRecords = 3000
	}
	for v := range strings.SplitSeq(*concurrency, ",") {
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("-concurrency: %q is not a positive number", v)
		}
		cfg.concurrency = append(cfg.concurrency, n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv, err := localaws.Start(ctx, localaws.Options{Kinesalite: strings.Contains(cfg.server, "kinesalite")})
	if err != nil {
		return err
	}
	defer func() {
		if stopErr := srv.Stop(); stopErr != nil {
			fmt.Fprintln(os.Stderr, "kinesis-bench-read:", stopErr)
		}
	}()
	if len(cfg.concurrency) > 0 {
		return compareConcurrency(ctx, cfg, srv)
	}
	b, err := newBench(cfg, srv, cfg.server)
	if err != nil {
		return err
	}

	fmt.Printf("kinesis-bench-read: %s, %d-shard streams, %d-byte records, pollInterval=%s maxRecords=%s\n",
		cfg.server, cfg.shards, cfg.recordSize, orDefault(cfg.pollInterval), orDefault(cfg.maxRecords))
	if err := b.latency(ctx); err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	if cfg.drainRecords == 0 {
		return nil
	}
	if err := b.drain(ctx); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	return nil
}

type bench struct {
	cfg      config
	srv      *localaws.Servers
	client   *kinesis.Client
	endpoint string
	extra    map[string]string // more binding metadata for the next startBinding
}

func newBench(cfg config, srv *localaws.Servers, server string) (*bench, error) {
	switch server {
	case "kinesis-local":
		return &bench{cfg: cfg, srv: srv, client: srv.KinesisClient(), endpoint: srv.KinesisEndpoint}, nil
	case "kinesalite":
		return &bench{cfg: cfg, srv: srv, client: srv.KinesaliteClient(), endpoint: srv.KinesaliteEndpoint}, nil
	default:
		return nil, fmt.Errorf("-server: unknown %q", server)
	}
}

// latency puts records at a steady rate on a stream the binding reads, each carrying its send time.
func (b *bench) latency(ctx context.Context) error {
	stream, err := b.newStream(ctx, "bench-latency")
	if err != nil {
		return err
	}
	var (
		mu   sync.Mutex
		lats []time.Duration
		done = make(chan struct{})
	)
	// The stream is new and empty, so TRIM_HORIZON reads what LATEST would; kinesalite never answers
	// the AT_TIMESTAMP iterator request LATEST becomes on an empty shard.
	binding, consumer, err := b.startBinding(ctx, stream, "TRIM_HORIZON", func(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(r.Data[:8])))
		mu.Lock()
		defer mu.Unlock()
		lats = append(lats, time.Since(sent))
		if len(lats) == b.cfg.latencyRecords {
			close(done)
		}
		return nil, nil
	})
	if err != nil {
		return err
	}
	defer binding.Close()
	// Measure steady state: the binding owns every shard before the first record.
	if err := b.waitOwned(ctx, consumer); err != nil {
		return err
	}

	tick := time.NewTicker(time.Second / time.Duration(b.cfg.latencyRate))
	defer tick.Stop()
	for i := range b.cfg.latencyRecords {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		data := make([]byte, b.cfg.recordSize)
		binary.BigEndian.PutUint64(data, uint64(time.Now().UnixNano()))
		if _, err := b.client.PutRecords(ctx, &kinesis.PutRecordsInput{
			StreamName: aws.String(stream),
			Records:    []types.PutRecordsRequestEntry{{Data: data, PartitionKey: aws.String(strconv.Itoa(i))}},
		}); err != nil {
			return err
		}
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		mu.Lock()
		n := len(lats)
		mu.Unlock()
		return fmt.Errorf("only %d of %d records delivered", n, b.cfg.latencyRecords)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lats)
	fmt.Printf("latency  put->handler over %d records at %d/s: p50 %v  p99 %v  max %v\n",
		len(lats), b.cfg.latencyRate, pct(lats, 50), pct(lats, 99), lats[len(lats)-1].Round(time.Millisecond))
	return nil
}

// drain fills a stream, then reads it from TRIM_HORIZON.
func (b *bench) drain(ctx context.Context) error {
	stream, err := b.newStream(ctx, "bench-drain")
	if err != nil {
		return err
	}
	filled := time.Now()
	data := make([]byte, b.cfg.recordSize)
	for put := 0; put < b.cfg.drainRecords; {
		n := min(500, b.cfg.drainRecords-put)
		entries := make([]types.PutRecordsRequestEntry, n)
		for i := range entries {
			entries[i] = types.PutRecordsRequestEntry{Data: data, PartitionKey: aws.String(strconv.Itoa(put + i))}
		}
		out, putErr := b.client.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
		if putErr != nil {
			return putErr
		}
		if f := aws.ToInt32(out.FailedRecordCount); f > 0 {
			return fmt.Errorf("%d records not put", f)
		}
		put += n
	}
	fillTook := time.Since(filled)
	fmt.Printf("drain    %d records pre-filled in %v\n", b.cfg.drainRecords, fillTook.Round(time.Millisecond))

	bare, err := b.bareLoop(ctx, stream)
	if err != nil {
		return fmt.Errorf("bare GetRecords loop: %w", err)
	}
	bareRate := float64(b.cfg.drainRecords) / bare.Seconds()
	fmt.Printf("drain    bare GetRecords loop (5 calls/s/shard, 10000 a call): %.0f records/s (%v)\n", bareRate, bare.Round(time.Millisecond))

	var (
		mu          sync.Mutex
		count       int
		first, last time.Time
		done        = make(chan struct{})
	)
	started := time.Now()
	binding, _, err := b.startBinding(ctx, stream, "TRIM_HORIZON", func(context.Context, *bindings.ReadResponse) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if count == 0 {
			first = now
		}
		last = now
		count++
		if count == b.cfg.drainRecords {
			close(done)
		}
		return nil, nil
	})
	if err != nil {
		return err
	}
	defer binding.Close()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Minute):
		return errors.New("the stream was not drained within 5 minutes")
	}
	mu.Lock()
	defer mu.Unlock()
	span := last.Sub(first)
	rate := float64(count) / last.Sub(started).Seconds()
	fmt.Printf("drain    binding: %.0f records/s from Read to the last delivery (%v); %.0f between first and last delivery\n",
		rate, last.Sub(started).Round(time.Millisecond), float64(count-1)/span.Seconds())
	fmt.Printf("drain    binding / bare loop: %.2fx\n", rate/bareRate)
	return nil
}

func (b *bench) newStream(ctx context.Context, prefix string) (string, error) {
	name := localaws.UniqueName(prefix)
	return name, b.srv.CreateStream(ctx, b.client, name, b.cfg.shards)
}

// startBinding starts a shared-mode input binding; its consumer name is also its lease table's.
func (b *bench) startBinding(ctx context.Context, stream, position string, handler bindings.Handler) (bindings.InputBinding, string, error) {
	log := logger.NewLogger("kinesis-bench-read")
	log.SetOutputLevel(logger.WarnLevel)
	consumer := localaws.UniqueName("bench")
	props := map[string]string{
		"streamName":       stream,
		"consumerName":     consumer,
		"region":           b.srv.Region,
		"endpoint":         b.endpoint,
		"dynamoDBEndpoint": b.srv.DynamoDBEndpoint,
		"accessKey":        localaws.AccessKeyID,
		"secretKey":        localaws.SecretAccessKey,
		"initialPosition":  position,
	}
	if b.cfg.pollInterval != "" {
		props["pollInterval"] = b.cfg.pollInterval
	}
	if b.cfg.maxRecords != "" {
		props["maxRecords"] = b.cfg.maxRecords
	}
	maps.Copy(props, b.extra)
	binding := kb.NewAWSKinesis(log)
	if err := binding.Init(ctx, bindings.Metadata{Base: metadata.Base{Properties: props}}); err != nil {
		return nil, "", err
	}
	if err := binding.Read(ctx, handler); err != nil {
		return nil, "", errors.Join(err, binding.Close())
	}
	return binding, consumer, nil
}

// waitOwned waits until every shard's lease in the consumer's lease table has an owner.
func (b *bench) waitOwned(ctx context.Context, consumer string) error {
	db := b.srv.DynamoDBClient()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		out, err := db.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(consumer), ConsistentRead: aws.Bool(true)})
		if err == nil {
			owned := 0
			for _, item := range out.Items {
				if _, ok := item["AssignedTo"]; ok {
					owned++
				}
			}
			if owned == int(b.cfg.shards) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("lease table %s: shards not all owned within 30 s", consumer)
}

func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)].Round(time.Millisecond)
}

func orDefault(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

// bareLoop reads the whole stream from TRIM_HORIZON the fastest way AWS's limits allow, one goroutine
// per shard: GetRecords of 10,000 at most every 200 ms, until a call returns nothing and says the
// shard is caught up. It returns the time from its start to the last record read.
func (b *bench) bareLoop(ctx context.Context, stream string) (time.Duration, error) {
	out, err := b.client.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	if err != nil {
		return 0, err
	}
	began := time.Now()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		lastRead time.Time
		errs     []error
	)
	for _, shard := range out.Shards {
		wg.Go(func() {
			it, err := b.client.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
				StreamName: aws.String(stream), ShardId: shard.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
			})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			iterator := it.ShardIterator
			for iterator != nil {
				call := time.Now()
				res, err := b.client.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iterator, Limit: aws.Int32(10000)})
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				if len(res.Records) > 0 {
					mu.Lock()
					if now := time.Now(); now.After(lastRead) {
						lastRead = now
					}
					mu.Unlock()
				} else if aws.ToInt64(res.MillisBehindLatest) == 0 {
					return
				}
				iterator = res.NextShardIterator
				time.Sleep(time.Until(call.Add(200 * time.Millisecond)))
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return lastRead.Sub(began), nil
}
