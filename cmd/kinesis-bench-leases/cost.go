package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/leases"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr/components-contrib/bindings"
)

// secondsPerMonth is the month the monthly figures are for: 30 days.
const secondsPerMonth = 30 * 24 * 3600

type costConfig struct {
	replicas     int
	idle, busy   time.Duration
	settle       time.Duration
	busyRate     int
	pollInterval string
	perReplica   bool
	failoverRuns int
}

// cost runs the replicas, each with DynamoDB meters of its own between it and dynalite, and prints
// what the lease table costs on AWS's on-demand prices: in total (and per replica), for an idle
// stream and for a busy one (records on every shard, so every shard checkpoints), plus the time
// from Read until every shard is owned and until the split is fair.
func (b *bench) cost(ctx context.Context) error {
	cfg := b.cfg
	stream, consumer, err := b.newStream(ctx)
	if err != nil {
		return err
	}
	meters := make([]*localaws.DynamoDBMeter, cfg.replicas)
	for i := range meters {
		if meters[i], err = localaws.StartDynamoDBMeter(b.srv.DynamoDBEndpoint, localaws.MeterLabel(heartbeatLabel)); err != nil {
			return err
		}
		defer meters[i].Close()
	}
	workers := workerIDs(cfg.replicas)
	replicas := make([]bindings.InputOutputBinding, cfg.replicas)
	errs := make([]error, cfg.replicas)
	began := time.Now()
	var wg sync.WaitGroup
	for i := range replicas {
		extra := map[string]string{"dynamoDBEndpoint": meters[i].URL()}
		if cfg.pollInterval != "" {
			extra["pollInterval"] = cfg.pollInterval
		}
		wg.Go(func() { replicas[i], errs[i] = b.start(ctx, stream, consumer, workers[i], nil, extra) })
	}
	wg.Wait()
	defer closeAll(replicas)
	if err = errors.Join(errs...); err != nil {
		return err
	}
	all, err := b.waitFor(ctx, consumer, 5*time.Minute, func(owners map[string]int, _ int) bool { return sum(owners) == int(b.shards) })
	if err != nil {
		return err
	}
	fairAt, err := b.waitFor(ctx, consumer, 5*time.Minute, func(owners map[string]int, claims int) bool {
		return fair(owners, int(b.shards), workers...) && claims == 0
	})
	if err != nil {
		return err
	}
	b.fig.cost = &costFigures{ownedFair: ownedFair{all: all.Sub(began), fair: fairAt.Sub(began)}}
	b.sayf("cost", "%d replicas on %d shards: all owned %v after Read, fair %v after", cfg.replicas, b.shards,
		all.Sub(began).Round(time.Millisecond), fairAt.Sub(began).Round(time.Millisecond))

	// The steady state starts once the changes of the start-up are a lease duration old: until then
	// heartbeat replicas step every shardSyncInterval, as after any change.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(cfg.settle):
	}
	if b.fig.cost.idle, err = b.measure(ctx, "idle", meters, cfg.idle); err != nil {
		return err
	}
	if cfg.busy <= 0 {
		return nil
	}
	return b.costBusy(ctx, stream, meters)
}

// costBusy measures the meters while records are put on every shard.
func (b *bench) costBusy(ctx context.Context, stream string, meters []*localaws.DynamoDBMeter) error {
	rate := b.cfg.busyRate
	if rate <= 0 {
		rate = 2 * int(b.shards)
	}
	putCtx, stopPuts := context.WithCancel(ctx)
	defer stopPuts()
	putErr := make(chan error, 1)
	go func() { putErr <- b.putAtRate(putCtx, stream, rate) }()
	time.Sleep(3 * time.Second) // every shard has records and checkpoints
	busy, err := b.measure(ctx, fmt.Sprintf("busy (%d records/s)", rate), meters, b.cfg.busy)
	if err != nil {
		return err
	}
	b.fig.cost.busy = busy
	stopPuts()
	if err := <-putErr; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// measure reads the meters over d and prints the total's rates and cost (and each replica's with
// -per-replica), then each operation's counts, heartbeats apart.
func (b *bench) measure(ctx context.Context, phase string, meters []*localaws.DynamoDBMeter, d time.Duration) (*rates, error) {
	before := make([]localaws.Usage, len(meters))
	for i, m := range meters {
		before[i] = m.Reading()
	}
	began := time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(d):
	}
	secs := time.Since(began).Seconds()
	b.sayf("cost", "%s, over %v:", phase, d)
	b.sayf("cost", "%-8s %9s %9s %11s %9s %9s %9s %12s", "replica", "calls/s", "scans/s", "updates/s", "gets/s", "RCU/s", "WCU/s", "$/month")
	total := localaws.Usage{}
	for i, m := range meters {
		use := m.Reading().Since(before[i])
		total = total.Plus(use)
		if b.cfg.perReplica {
			b.printRates("r"+strconv.Itoa(i), ratesOf(use, secs))
		}
	}
	r := ratesOf(total, secs)
	b.printRates("total", r)
	b.printOps(total)
	return &r, nil
}

// printOps prints each operation's counts over the phase; OP/heartbeat is OP on the heartbeat item.
func (b *bench) printOps(total localaws.Usage) {
	ops := make([]string, 0, len(total))
	for op, u := range total {
		if u.Calls > 0 {
			ops = append(ops, op)
		}
	}
	sort.Strings(ops)
	for _, op := range ops {
		u := total[op]
		b.sayf("cost", "%-20s %d calls, %d items, %.1f read units, %.1f write units", op, u.Calls, u.Items, u.ReadUnits, u.WriteUnits)
	}
}

// heartbeatOn labels, in a meter's reading, the operations on the heartbeat item: "UpdateItem/heartbeat".
const heartbeatOn = "heartbeat"

// heartbeatLabel tells the meters the requests on the heartbeat item (leases.HeartbeatKey) from the
// others: a heartbeat is an UpdateItem or a GetItem as a lease's renewal or read is. A Scan has no
// Key: it reads the heartbeat item with the leases and is counted with them.
func heartbeatLabel(req map[string]json.RawMessage) string {
	var key map[string]struct{ S string }
	if json.Unmarshal(req["Key"], &key) == nil && key[leases.AttrShardID].S == leases.HeartbeatKey {
		return heartbeatOn
	}
	return ""
}

// rates is a phase's use per second, and its cost per month.
type rates struct {
	calls, scans            float64
	updates, heartbeatWrite float64 // UpdateItem calls, of which on the heartbeat item
	gets, heartbeatRead     float64 // GetItem calls, of which on the heartbeat item
	rcu, wcu, monthly       float64
}

func ratesOf(use localaws.Usage, secs float64) rates {
	t := use.Total()
	r := rates{
		calls:          float64(t.Calls) / secs,
		scans:          float64(use["Scan"].Calls) / secs,
		heartbeatWrite: float64(use["UpdateItem/"+heartbeatOn].Calls) / secs,
		heartbeatRead:  float64(use["GetItem/"+heartbeatOn].Calls) / secs,
		rcu:            t.ReadUnits / secs,
		wcu:            t.WriteUnits / secs,
	}
	r.updates = float64(use["UpdateItem"].Calls)/secs + r.heartbeatWrite
	r.gets = float64(use["GetItem"].Calls)/secs + r.heartbeatRead
	r.monthly = (r.rcu*localaws.PricePerMillionReadUnits + r.wcu*localaws.PricePerMillionWriteUnits) * secondsPerMonth / 1e6
	return r
}

func (b *bench) printRates(name string, r rates) {
	b.sayf("cost", "%-8s %9.1f %9.1f %11.1f %9.1f %9.1f %9.1f %12.2f", name, r.calls, r.scans, r.updates, r.gets, r.rcu, r.wcu, r.monthly)
}

// putAtRate puts rate records a second on random keys (so spread over the shards) until ctx ends.
func (b *bench) putAtRate(ctx context.Context, stream string, rate int) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	perTick := max(rate/10, 1)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		for from := 0; from < perTick; from += 500 {
			n := min(500, perTick-from)
			entries := make([]types.PutRecordsRequestEntry, n)
			for j := range entries {
				key := strconv.FormatUint(rand.Uint64(), 36)
				entries[j] = types.PutRecordsRequestEntry{Data: []byte(key), PartitionKey: aws.String(key)}
			}
			if _, err := b.client.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries}); err != nil {
				return fmt.Errorf("putting records: %w", err)
			}
		}
	}
}
