// Command kinesis-bench-leases measures how fast replicas of the input binding share a stream,
// against local emulators it starts itself (kinesis-local, dynalite), each case on a fresh stream:
//
//   - one: one replica on a 64-shard stream; time from Read's call until the lease table shows
//     every shard owned;
//   - three: three replicas whose Read is called together; time until every shard is owned, and
//     until the split is fair (max-min ≤ 1) with no claim pending;
//   - rolling: three replicas sharing the stream while records are put (a record ID in each); one is
//     closed and a replacement started; time from the replacement's Read until fair again, and the
//     records lost (never delivered) and duplicated (delivered more than once) over the whole case;
//   - cost: -replicas replicas, each with a DynamoDB meter (internal/localaws) between it and
//     dynalite; what the lease table costs at AWS's on-demand prices, per replica and in total, for
//     an idle stream and for a busy one (-busy-rate records/s on random keys), with the time until
//     every shard is owned and until the split is fair;
//   - failover: -replicas replica processes; one is SIGKILLed, and the time until the others own
//     every shard again is printed (a lease is taken over once seen unrenewed for leaseDuration).
//
// Default metadata throughout except initialPosition TRIM_HORIZON (and -poll-interval for cost).
// Figures are printed, never asserted: the machine is shared.
//
//	go run ./cmd/kinesis-bench-leases
//	go run ./cmd/kinesis-bench-leases -shards 16 -cases one,three
//	go run ./cmd/kinesis-bench-leases -cases cost -shards 200 -replicas 20 -poll-interval 2s -busy-rate 400
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	kb "github.com/dapr-kinesis/kinesis"
	"github.com/dapr-kinesis/kinesis/internal/consumerproc"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"
)

func main() {
	if consumerproc.IsChild() {
		os.Exit(consumerproc.RunChild())
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kinesis-bench-leases:", err)
		os.Exit(1)
	}
}

var logLevel string

type bench struct {
	srv    *localaws.Servers
	client *kinesis.Client
	db     *dynamodb.Client
	shards int32
}

func run() error {
	shards := flag.Int("shards", 64, "shards per stream")
	cases := flag.String("cases", "one,three,rolling", "cases to run: one, three, rolling, cost, failover")
	flag.IntVar(&costCfg.replicas, "replicas", 3, "cost: replicas on the stream")
	flag.DurationVar(&costCfg.idle, "idle", 30*time.Second, "cost: how long the idle stream is measured")
	flag.DurationVar(&costCfg.busy, "busy", 30*time.Second, "cost: how long the busy stream is measured (0: not at all)")
	flag.IntVar(&costCfg.busyRate, "busy-rate", 0, "cost: records put per second while busy (default: 2 per shard)")
	flag.StringVar(&costCfg.pollInterval, "poll-interval", "", "cost: the replicas' pollInterval (default: the binding's; raise it for large sizes)")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on the whole run")
	flag.StringVar(&logLevel, "log-level", "warn", "the replicas' log level (debug shows each lease taken, claimed and handed over)")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := localaws.Start(ctx, localaws.Options{})
	if err != nil {
		return err
	}
	defer func() {
		if err := srv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "kinesis-bench-leases:", err)
		}
	}()
	b := &bench{srv: srv, client: srv.KinesisClient(), db: srv.DynamoDBClient(), shards: int32(*shards)}
	fmt.Printf("kinesis-bench-leases: kinesis-local + dynalite, %d-shard streams, default metadata\n", b.shards)
	for _, c := range strings.Split(*cases, ",") {
		var err error
		switch c {
		case "one":
			err = b.one(ctx)
		case "three":
			err = b.three(ctx)
		case "rolling":
			err = b.rolling(ctx)
		case "cost":
			err = b.cost(ctx, costCfg)
		case "failover":
			err = b.failover(ctx, costCfg)
		default:
			err = fmt.Errorf("unknown case %q", c)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", c, err)
		}
	}
	return nil
}

func (b *bench) one(ctx context.Context) error {
	stream, consumer, err := b.newStream(ctx)
	if err != nil {
		return err
	}
	began := time.Now()
	r, err := b.start(ctx, stream, consumer, "one", nil)
	if err != nil {
		return err
	}
	defer r.Close()
	owned, err := b.waitFor(ctx, consumer, 60*time.Second, func(owners map[string]int, _ int) bool { return owners["one"] == int(b.shards) })
	if err != nil {
		return err
	}
	fmt.Printf("one      one replica owns all %d shards %v after Read\n", b.shards, owned.Sub(began).Round(time.Millisecond)) //nolint:dupword // the case name heads the line
	return nil
}

func (b *bench) three(ctx context.Context) error {
	stream, consumer, err := b.newStream(ctx)
	if err != nil {
		return err
	}
	began := time.Now()
	replicas := make([]bindings.InputOutputBinding, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() { replicas[i], errs[i] = b.start(ctx, stream, consumer, "r"+strconv.Itoa(i), nil) })
	}
	wg.Wait()
	defer closeAll(replicas)
	if err = errors.Join(errs...); err != nil {
		return err
	}
	all, err := b.waitFor(ctx, consumer, 60*time.Second, func(owners map[string]int, _ int) bool { return sum(owners) == int(b.shards) })
	if err != nil {
		return err
	}
	fairAt, err := b.waitFor(ctx, consumer, 60*time.Second, func(owners map[string]int, claims int) bool {
		return fair(owners, int(b.shards), "r0", "r1", "r2") && claims == 0
	})
	if err != nil {
		return err
	}
	fmt.Printf("three    three replicas started together: all %d shards owned %v after Read, fair (max-min <= 1) %v after\n", //nolint:dupword // the case name heads the line
		b.shards, all.Sub(began).Round(time.Millisecond), fairAt.Sub(began).Round(time.Millisecond))
	return nil
}

func (b *bench) rolling(ctx context.Context) error {
	stream, consumer, err := b.newStream(ctx)
	if err != nil {
		return err
	}
	rec := &recorder{delivered: map[string]int{}}
	replicas := map[string]bindings.InputOutputBinding{}
	defer func() {
		for _, r := range replicas {
			_ = r.Close()
		}
	}()
	for _, w := range []string{"r0", "r1", "r2"} {
		r, startErr := b.start(ctx, stream, consumer, w, rec.handle)
		if startErr != nil {
			return startErr
		}
		replicas[w] = r
	}
	putCtx, stopPuts := context.WithCancel(ctx)
	var (
		sent    []string
		putErr  error
		putDone = make(chan struct{})
	)
	go func() {
		defer close(putDone)
		sent, putErr = b.putLoop(putCtx, stream)
	}()
	if _, err = b.waitFor(ctx, consumer, 60*time.Second, func(owners map[string]int, claims int) bool {
		return fair(owners, int(b.shards), "r0", "r1", "r2") && claims == 0
	}); err != nil {
		stopPuts()
		<-putDone
		return err
	}
	if err = replicas["r1"].Close(); err != nil {
		fmt.Printf("rolling  Close of r1: %v\n", err)
	}
	delete(replicas, "r1")
	began := time.Now()
	r, err := b.start(ctx, stream, consumer, "r3", rec.handle)
	if err != nil {
		stopPuts()
		<-putDone
		return err
	}
	replicas["r3"] = r
	fairAt, err := b.waitFor(ctx, consumer, 60*time.Second, func(owners map[string]int, claims int) bool {
		return fair(owners, int(b.shards), "r0", "r2", "r3") && claims == 0
	})
	time.Sleep(2 * time.Second)
	stopPuts()
	<-putDone
	if err != nil {
		return err
	}
	if putErr != nil && !errors.Is(putErr, context.Canceled) {
		return putErr
	}
	lost, dups := rec.check(ctx, sent, 60*time.Second)
	fmt.Printf("rolling  replica closed, replacement fair again %v after its Read; %d records put, %d lost, %d delivered twice\n",
		fairAt.Sub(began).Round(time.Millisecond), len(sent), lost, dups)
	return nil
}

// putLoop puts 4 records every 100 ms, on keys spread over the shards, until ctx ends.
func (b *bench) putLoop(ctx context.Context, stream string) ([]string, error) {
	var sent []string
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return sent, nil
		case <-time.After(100 * time.Millisecond):
		}
		entries := make([]types.PutRecordsRequestEntry, 4)
		ids := make([]string, 4)
		for j := range entries {
			ids[j] = fmt.Sprintf("rec-%06d-%d", i, j)
			entries[j] = types.PutRecordsRequestEntry{Data: []byte(ids[j]), PartitionKey: aws.String(ids[j])}
		}
		out, err := b.client.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
		if err != nil {
			return sent, err
		}
		if aws.ToInt32(out.FailedRecordCount) > 0 {
			return sent, errors.New("records not put")
		}
		sent = append(sent, ids...)
	}
}

type recorder struct {
	mu        sync.Mutex
	delivered map[string]int
}

func (r *recorder) handle(_ context.Context, resp *bindings.ReadResponse) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delivered[string(resp.Data)]++
	return nil, nil
}

// check waits up to timeout for every record sent, then counts the missing and the duplicated.
func (r *recorder) check(ctx context.Context, sent []string, timeout time.Duration) (lost, dups int) {
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		lost, dups = 0, 0
		for _, id := range sent {
			switch n := r.delivered[id]; {
			case n == 0:
				lost++
			case n > 1:
				dups += n - 1
			}
		}
		r.mu.Unlock()
		if lost == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return lost, dups
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *bench) newStream(ctx context.Context) (stream, consumer string, err error) {
	stream = localaws.UniqueName("bench-leases")
	return stream, localaws.UniqueName("bench"), b.srv.CreateStream(ctx, b.client, stream, b.shards)
}

func (b *bench) start(ctx context.Context, stream, consumer, worker string, handler bindings.Handler, extra ...map[string]string) (bindings.InputOutputBinding, error) {
	log := logger.NewLogger("kinesis-bench-leases-" + worker)
	log.SetOutputLevel(logger.LogLevel(logLevel))
	if handler == nil {
		handler = func(context.Context, *bindings.ReadResponse) ([]byte, error) { return nil, nil }
	}
	props := map[string]string{
		"streamName": stream, "consumerName": consumer, "workerID": worker,
		"region": b.srv.Region, "endpoint": b.srv.KinesisEndpoint, "dynamoDBEndpoint": b.srv.DynamoDBEndpoint,
		"accessKey": localaws.AccessKeyID, "secretKey": localaws.SecretAccessKey, "initialPosition": "TRIM_HORIZON",
	}
	for _, e := range extra {
		maps.Copy(props, e)
	}
	binding := kb.NewAWSKinesis(log)
	if err := binding.Init(ctx, bindings.Metadata{Base: metadata.Base{Properties: props}}); err != nil {
		return nil, err
	}
	if err := binding.Read(ctx, handler); err != nil {
		return nil, errors.Join(err, binding.Close())
	}
	return binding, nil
}

// waitFor polls the lease table until done holds (shards owned per worker, claims pending) and
// returns when it first did.
func (b *bench) waitFor(ctx context.Context, table string, timeout time.Duration, done func(owners map[string]int, claims int) bool) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		owners, claims := map[string]int{}, 0
		in := &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true)}
		for {
			out, err := b.db.Scan(ctx, in)
			if err != nil {
				break
			}
			for _, item := range out.Items {
				if o := attr(item, "AssignedTo"); o != "" {
					owners[o]++
				}
				if attr(item, "ClaimRequest") != "" {
					claims++
				}
			}
			if len(out.LastEvaluatedKey) == 0 {
				if done(owners, claims) {
					return time.Now(), nil
				}
				break
			}
			in.ExclusiveStartKey = out.LastEvaluatedKey
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return time.Time{}, fmt.Errorf("lease table %s: not there within %v", table, timeout)
}

func closeAll(bs []bindings.InputOutputBinding) {
	var wg sync.WaitGroup
	for _, b := range bs {
		if b != nil {
			wg.Go(func() { _ = b.Close() })
		}
	}
	wg.Wait()
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func fair(owners map[string]int, total int, workers ...string) bool {
	lo, hi, n := total, 0, 0
	for _, w := range workers {
		lo, hi, n = min(lo, owners[w]), max(hi, owners[w]), n+owners[w]
	}
	return n == total && hi-lo <= 1
}

func attr(item map[string]dtypes.AttributeValue, key string) string {
	if v, ok := item[key].(*dtypes.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}
