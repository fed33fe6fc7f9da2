// Command kinesis-bench-leases measures how fast replicas of the input binding share a stream, and
// what their lease table costs, against local emulators it starts itself (kinesis-local,
// dynalite). Every case runs once per lease protocol of -protocols (the replicas' leaseProtocol:
// renewal, what earlier versions did, and heartbeat, the default), each on a fresh stream, so that
// the before and after figures come out of one run; every line names its protocol, and a summary
// table at the end puts them side by side with their ratio (heartbeat / renewal). The cases:
//
//   - one: one replica on the stream; time from Read's call until the lease table shows every
//     shard owned;
//   - three: three replicas whose Read is called together; time until every shard is owned, and
//     until the split is fair (max-min ≤ 1) with no claim pending;
//   - rolling: three replicas sharing the stream while records are put (a record ID in each); one is
//     closed and a replacement started; time from the replacement's Read until fair again, and the
//     records lost (never delivered) and duplicated (delivered more than once) over the whole case;
//   - cost: -replicas replicas, each with a DynamoDB meter (internal/localaws) between it and
//     dynalite; what the lease table costs at AWS's on-demand prices, in total (and per replica with
//     -per-replica), for an idle stream and for a busy one (-busy-rate records/s on random keys),
//     with heartbeat writes and reads (the heartbeat item's UpdateItem and GetItem) counted apart
//     from the leases', and the time until every shard is owned and until the split is fair;
//   - failover: -replicas replica processes; one is SIGKILLed, and the time until the others own
//     every shard again is printed (a lease is taken over once its owner is seen dead for
//     leaseDuration); -failover-runs times, each on a fresh stream, with the median.
//
// Default metadata throughout except initialPosition TRIM_HORIZON, leaseProtocol and (cost,
// failover) -poll-interval. Worker IDs are as long as the binding's default (a host name and 8 hex
// digits), since the heartbeat item holds one attribute per replica and its size is what is billed.
// Figures are printed, never asserted: the machine is shared.
//
//	go run ./cmd/kinesis-bench-leases
//	go run ./cmd/kinesis-bench-leases -shards 16 -cases one,three -protocols heartbeat
//	go run ./cmd/kinesis-bench-leases -cases cost -shards 200 -replicas 20 -poll-interval 2s -busy-rate 400 -per-replica
//	go run ./cmd/kinesis-bench-leases -cases cost,failover -shards 1000 -replicas 20 -poll-interval 5s -busy 0
//	go run ./cmd/kinesis-bench-leases -cases failover -shards 64 -replicas 5 -failover-runs 5
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
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
	"github.com/dapr-kinesis/kinesis/internal/leases"
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

// caseNames are the cases, in the order the doc comment gives them.
var caseNames = []string{"one", "three", "rolling", "cost", "failover"}

// bench is the emulators and, once as has chosen them, the protocol a case's replicas use and
// where that protocol's figures go.
type bench struct {
	srv      *localaws.Servers
	client   *kinesis.Client
	db       *dynamodb.Client
	shards   int32
	cfg      costConfig
	protocol leases.Protocol
	fig      *figures
}

func run() error {
	shards := flag.Int("shards", 64, "shards per stream")
	cases := flag.String("cases", "one,three,rolling", "cases to run: "+strings.Join(caseNames, ", "))
	protocols := flag.String("protocols", "renewal,heartbeat", "lease protocols (leaseProtocol) every case runs with, in turn: renewal, heartbeat")
	var cfg costConfig
	flag.IntVar(&cfg.replicas, "replicas", 3, "cost, failover: replicas on the stream")
	flag.DurationVar(&cfg.idle, "idle", 30*time.Second, "cost: how long the idle stream is measured")
	flag.DurationVar(&cfg.settle, "settle", 25*time.Second, "cost: wait after the fair split before the idle stream is measured (two default lease durations and some: the passes start-up scheduled are done)")
	flag.DurationVar(&cfg.busy, "busy", 30*time.Second, "cost: how long the busy stream is measured (0: not at all)")
	flag.IntVar(&cfg.busyRate, "busy-rate", 0, "cost: records put per second while busy (default: 2 per shard)")
	flag.StringVar(&cfg.pollInterval, "poll-interval", "", "cost, failover: the replicas' pollInterval (default: the binding's; raise it for large sizes)")
	flag.BoolVar(&cfg.perReplica, "per-replica", false, "cost: print each replica's row, not only the total")
	flag.IntVar(&cfg.failoverRuns, "failover-runs", 1, "failover: how many kills per protocol, each on a fresh stream")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on the whole run")
	flag.StringVar(&logLevel, "log-level", "warn", "the replicas' log level (debug shows each lease taken, claimed and handed over)")
	flag.Parse()

	names, err := parseCases(*cases)
	if err != nil {
		return err
	}
	protos, err := parseProtocols(*protocols)
	if err != nil {
		return err
	}
	if cfg.replicas < 1 || cfg.failoverRuns < 1 {
		return errors.New("-replicas and -failover-runs must be at least 1")
	}

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
	b := &bench{srv: srv, client: srv.KinesisClient(), db: srv.DynamoDBClient(), shards: int32(*shards), cfg: cfg}
	fmt.Printf("kinesis-bench-leases: kinesis-local + dynalite, %d-shard streams, default metadata, protocols %s\n",
		b.shards, strings.Join(protocolStrings(protos), ", "))
	figs := make(map[leases.Protocol]*figures, len(protos))
	for _, p := range protos {
		figs[p] = &figures{}
	}
	runErr := b.runCases(ctx, names, protos, figs)
	// The summary comes even after a failure: the cases before it may have taken many minutes.
	printSummary(protos, figs, cfg)
	return runErr
}

// runCases runs each case once per protocol, the protocols in turn, so that both see the machine
// in the same state as far as a shared machine allows; failover's runs are interleaved the same way.
func (b *bench) runCases(ctx context.Context, names []string, protos []leases.Protocol, figs map[leases.Protocol]*figures) error {
	for _, name := range names {
		runs := 1
		if name == "failover" {
			runs = b.cfg.failoverRuns
		}
		for range runs {
			for _, p := range protos {
				if err := b.as(p, figs[p]).runCase(ctx, name); err != nil {
					return fmt.Errorf("%s (%s): %w", name, p, err)
				}
				if err := b.deleteStreams(ctx); err != nil {
					return fmt.Errorf("%s (%s): %w", name, p, err)
				}
			}
		}
		if name == "failover" && runs > 1 {
			for _, p := range protos {
				b.as(p, figs[p]).sayf("failover", "median of %d runs: %v", runs, median(figs[p].failover).Round(time.Millisecond))
			}
		}
	}
	return nil
}

func (b *bench) runCase(ctx context.Context, name string) error {
	switch name {
	case "one":
		return b.one(ctx)
	case "three":
		return b.three(ctx)
	case "rolling":
		return b.rolling(ctx)
	case "cost":
		return b.cost(ctx)
	case "failover":
		return b.failover(ctx)
	}
	return fmt.Errorf("unknown case %q", name) // parseCases let it through
}

// as is the bench for one protocol's run of a case.
func (b *bench) as(p leases.Protocol, fig *figures) *bench {
	c := *b
	c.protocol, c.fig = p, fig
	return &c
}

// sayf prints one line of a case, headed by the case and the protocol, so that the two protocols'
// lines can be told apart (and grepped).
func (b *bench) sayf(name, format string, args ...any) {
	fmt.Printf("%-8s %-9s %s\n", name, b.protocol, fmt.Sprintf(format, args...))
}

func parseCases(s string) ([]string, error) {
	var out []string
	for c := range strings.SplitSeq(s, ",") {
		c = strings.TrimSpace(c)
		if !slices.Contains(caseNames, c) {
			return nil, fmt.Errorf("unknown case %q (the cases: %s)", c, strings.Join(caseNames, ", "))
		}
		out = append(out, c)
	}
	return out, nil
}

func parseProtocols(s string) ([]leases.Protocol, error) {
	var out []leases.Protocol
	for p := range strings.SplitSeq(s, ",") {
		proto := leases.Protocol(strings.TrimSpace(p))
		if proto != leases.ProtocolRenewal && proto != leases.ProtocolHeartbeat {
			return nil, fmt.Errorf("unknown protocol %q (the protocols: %s, %s)", proto, leases.ProtocolRenewal, leases.ProtocolHeartbeat)
		}
		if !slices.Contains(out, proto) {
			out = append(out, proto)
		}
	}
	return out, nil
}

func protocolStrings(protos []leases.Protocol) []string {
	out := make([]string, len(protos))
	for i, p := range protos {
		out[i] = string(p)
	}
	return out
}

// workerID is replica i's worker ID: as long as the binding's default (a pod's host name, "-" and
// 8 hex digits), since the heartbeat item holds an attribute named after each replica and its
// size is billed; stable per index, so the lease table reads the same in every case.
func workerID(i int) string {
	return fmt.Sprintf("orders-consumer-7d9f8b6c4-x2k9q-%08x", i)
}

func workerIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = workerID(i)
	}
	return out
}

func (b *bench) one(ctx context.Context) error {
	stream, consumer, err := b.newStream(ctx)
	if err != nil {
		return err
	}
	w := workerID(0)
	began := time.Now()
	r, err := b.start(ctx, stream, consumer, w, nil)
	if err != nil {
		return err
	}
	defer r.Close()
	owned, err := b.waitFor(ctx, consumer, 60*time.Second, func(owners map[string]int, _ int) bool { return owners[w] == int(b.shards) })
	if err != nil {
		return err
	}
	took := owned.Sub(began)
	b.fig.one = &took
	b.sayf("one", "one replica owns all %d shards %v after Read", b.shards, owned.Sub(began).Round(time.Millisecond))
	return nil
}

func (b *bench) three(ctx context.Context) error {
	stream, consumer, err := b.newStream(ctx)
	if err != nil {
		return err
	}
	workers := workerIDs(3)
	began := time.Now()
	replicas := make([]bindings.InputOutputBinding, len(workers))
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() { replicas[i], errs[i] = b.start(ctx, stream, consumer, workers[i], nil) })
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
		return fair(owners, int(b.shards), workers...) && claims == 0
	})
	if err != nil {
		return err
	}
	b.fig.three = &ownedFair{all: all.Sub(began), fair: fairAt.Sub(began)}
	b.sayf("three", "three replicas started together: all %d shards owned %v after Read, fair (max-min <= 1) %v after",
		b.shards, all.Sub(began).Round(time.Millisecond), fairAt.Sub(began).Round(time.Millisecond))
	return nil
}

func (b *bench) rolling(ctx context.Context) error {
	stream, consumer, err := b.newStream(ctx)
	if err != nil {
		return err
	}
	w := workerIDs(4) // w[3] replaces w[1]
	rec := &recorder{delivered: map[string]int{}}
	replicas := map[string]bindings.InputOutputBinding{}
	defer func() {
		for _, r := range replicas {
			_ = r.Close()
		}
	}()
	for _, id := range w[:3] {
		r, startErr := b.start(ctx, stream, consumer, id, rec.handle)
		if startErr != nil {
			return startErr
		}
		replicas[id] = r
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
		return fair(owners, int(b.shards), w[0], w[1], w[2]) && claims == 0
	}); err != nil {
		stopPuts()
		<-putDone
		return err
	}
	if err = replicas[w[1]].Close(); err != nil {
		b.sayf("rolling", "Close of replica 1: %v", err)
	}
	delete(replicas, w[1])
	began := time.Now()
	r, err := b.start(ctx, stream, consumer, w[3], rec.handle)
	if err != nil {
		stopPuts()
		<-putDone
		return err
	}
	replicas[w[3]] = r
	fairAt, err := b.waitFor(ctx, consumer, 60*time.Second, func(owners map[string]int, claims int) bool {
		return fair(owners, int(b.shards), w[0], w[2], w[3]) && claims == 0
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
	b.fig.rolling = &rollingFigures{fair: fairAt.Sub(began), lost: lost, dups: dups}
	b.sayf("rolling", "replica closed, replacement fair again %v after its Read; %d records put, %d lost, %d delivered twice",
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
			return sent, fmt.Errorf("putting records: %w", err)
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

// streamPrefix names the bench's streams, so that they can be deleted after each case.
const streamPrefix = "bench-leases"

// deleteStreams deletes the streams a case made and waits until they are gone: the next case gets
// kinesis-local to itself (an idle 1,000-shard stream keeps it busy), and the account's shard limit.
func (b *bench) deleteStreams(ctx context.Context) error {
	out, err := b.client.ListStreams(ctx, &kinesis.ListStreamsInput{})
	if err != nil {
		return fmt.Errorf("listing streams: %w", err)
	}
	for _, name := range out.StreamNames {
		if !strings.HasPrefix(name, streamPrefix) {
			continue
		}
		if _, err := b.client.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(name), EnforceConsumerDeletion: aws.Bool(true)}); err != nil {
			return fmt.Errorf("deleting stream %s: %w", name, err)
		}
		for {
			_, err := b.client.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
			var gone *types.ResourceNotFoundException
			if errors.As(err, &gone) {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func (b *bench) newStream(ctx context.Context) (stream, consumer string, err error) {
	stream = localaws.UniqueName(streamPrefix)
	return stream, localaws.UniqueName("bench"), b.srv.CreateStream(ctx, b.client, stream, b.shards)
}

// props is a replica's component metadata: the emulators, the bench's stream and protocol, and
// TRIM_HORIZON so that records put before a lease is taken are read.
func (b *bench) props(stream, consumer, worker string) map[string]string {
	return map[string]string{
		"streamName": stream, "consumerName": consumer, "workerID": worker, "leaseProtocol": string(b.protocol),
		"region": b.srv.Region, "endpoint": b.srv.KinesisEndpoint, "dynamoDBEndpoint": b.srv.DynamoDBEndpoint,
		"accessKey": localaws.AccessKeyID, "secretKey": localaws.SecretAccessKey, "initialPosition": "TRIM_HORIZON",
	}
}

func (b *bench) start(ctx context.Context, stream, consumer, worker string, handler bindings.Handler, extra ...map[string]string) (bindings.InputOutputBinding, error) {
	log := logger.NewLogger("kinesis-bench-leases-" + worker)
	log.SetOutputLevel(logger.LogLevel(logLevel))
	if handler == nil {
		handler = func(context.Context, *bindings.ReadResponse) ([]byte, error) { return nil, nil }
	}
	props := b.props(stream, consumer, worker)
	for _, e := range extra {
		maps.Copy(props, e)
	}
	binding := kb.NewAWSKinesis(log)
	if err := binding.Init(ctx, bindings.Metadata{Base: metadata.Base{Properties: props}}); err != nil {
		return nil, fmt.Errorf("replica %s: %w", worker, err)
	}
	if err := binding.Read(ctx, handler); err != nil {
		return nil, fmt.Errorf("replica %s: %w", worker, errors.Join(err, binding.Close()))
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
				if o := attr(item, leases.AttrOwner); o != "" {
					owners[o]++
				}
				if attr(item, leases.AttrClaim) != "" {
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
