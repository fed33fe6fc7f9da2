package main

import (
	"context"
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

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr/components-contrib/bindings"
)

// secondsPerMonth is the month the monthly figures are for: 30 days.
const secondsPerMonth = 30 * 24 * 3600

type costConfig struct {
	replicas     int
	idle, busy   time.Duration
	busyRate     int
	pollInterval string
}

var costCfg costConfig

// cost runs the replicas, each with a DynamoDB meter of its own between it and dynalite, and prints
// what the lease table costs on AWS's on-demand prices: per replica and in total, for an idle stream
// and for a busy one (records on every shard, so every shard checkpoints), plus the time from Read
// until every shard is owned and until the split is fair.
func (b *bench) cost(ctx context.Context, cfg costConfig) error {
	stream, consumer, err := b.newStream(ctx)
	if err != nil {
		return err
	}
	meters := make([]*localaws.DynamoDBMeter, cfg.replicas)
	for i := range meters {
		if meters[i], err = localaws.StartDynamoDBMeter(b.srv.DynamoDBEndpoint); err != nil {
			return err
		}
		defer meters[i].Close()
	}
	workers := make([]string, cfg.replicas)
	replicas := make([]bindings.InputOutputBinding, cfg.replicas)
	errs := make([]error, cfg.replicas)
	began := time.Now()
	var wg sync.WaitGroup
	for i := range replicas {
		workers[i] = "r" + strconv.Itoa(i)
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
	fmt.Printf("cost     %d replicas on %d shards: all owned %v after Read, fair %v after\n", cfg.replicas, b.shards,
		all.Sub(began).Round(time.Millisecond), fairAt.Sub(began).Round(time.Millisecond))

	if err := measure(ctx, "idle", meters, cfg.idle); err != nil {
		return err
	}
	if cfg.busy <= 0 {
		return nil
	}
	rate := cfg.busyRate
	if rate <= 0 {
		rate = 2 * int(b.shards)
	}
	putCtx, stopPuts := context.WithCancel(ctx)
	defer stopPuts()
	putErr := make(chan error, 1)
	go func() { putErr <- b.putAtRate(putCtx, stream, rate) }()
	time.Sleep(3 * time.Second) // every shard has records and checkpoints
	if err := measure(ctx, fmt.Sprintf("busy (%d records/s)", rate), meters, cfg.busy); err != nil {
		return err
	}
	stopPuts()
	if err := <-putErr; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// measure reads the meters over d and prints each replica's and the total's rates and cost.
func measure(ctx context.Context, phase string, meters []*localaws.DynamoDBMeter, d time.Duration) error {
	before := make([]localaws.Usage, len(meters))
	for i, m := range meters {
		before[i] = m.Reading()
	}
	began := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
	}
	secs := time.Since(began).Seconds()
	fmt.Printf("cost     %s, over %v:\n", phase, d)
	fmt.Printf("         %-8s %9s %9s %11s %9s %9s %12s\n", "replica", "calls/s", "scans/s", "updates/s", "RCU/s", "WCU/s", "$/month")
	total := localaws.Usage{}
	for i, m := range meters {
		use := m.Reading().Since(before[i])
		for op, u := range use {
			t := total[op]
			t.Calls, t.Items, t.ReadUnits, t.WriteUnits = t.Calls+u.Calls, t.Items+u.Items, t.ReadUnits+u.ReadUnits, t.WriteUnits+u.WriteUnits
			total[op] = t
		}
		printUsage("r"+strconv.Itoa(i), use, secs)
	}
	printUsage("total", total, secs)
	ops := make([]string, 0, len(total))
	for op, u := range total {
		if u.Calls > 0 {
			ops = append(ops, op)
		}
	}
	sort.Strings(ops)
	for _, op := range ops {
		u := total[op]
		fmt.Printf("         %-12s %d calls, %d items, %.1f read units, %.1f write units\n", op, u.Calls, u.Items, u.ReadUnits, u.WriteUnits)
	}
	return nil
}

func printUsage(name string, use localaws.Usage, secs float64) {
	t := use.Total()
	rcu, wcu := t.ReadUnits/secs, t.WriteUnits/secs
	monthly := (rcu*localaws.PricePerMillionReadUnits + wcu*localaws.PricePerMillionWriteUnits) * secondsPerMonth / 1e6
	fmt.Printf("         %-8s %9.1f %9.1f %11.1f %9.1f %9.1f %12.2f\n", name, float64(t.Calls)/secs,
		float64(use["Scan"].Calls)/secs, float64(use["UpdateItem"].Calls)/secs, rcu, wcu, monthly)
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
				return err
			}
		}
	}
}
