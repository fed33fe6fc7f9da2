package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/consumerproc"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

// failover runs the replicas as processes (consumerproc), waits for a fair split, SIGKILLs one and
// prints how long until the others own every shard again.
func (b *bench) failover(ctx context.Context, cfg costConfig) error {
	stream, consumer, err := b.newStream(ctx)
	if err != nil {
		return err
	}
	logDir, err := os.MkdirTemp("", "kinesis-bench-leases-")
	if err != nil {
		return err
	}
	workers := make([]string, cfg.replicas)
	procs := make([]*consumerproc.Proc, 0, cfg.replicas)
	defer func() {
		for _, p := range procs {
			_ = p.Stop()
		}
	}()
	for i := range workers {
		workers[i] = "r" + strconv.Itoa(i)
		props := map[string]string{
			"streamName": stream, "consumerName": consumer, "workerID": workers[i],
			"region": b.srv.Region, "endpoint": b.srv.KinesisEndpoint, "dynamoDBEndpoint": b.srv.DynamoDBEndpoint,
			"accessKey": localaws.AccessKeyID, "secretKey": localaws.SecretAccessKey, "initialPosition": "TRIM_HORIZON",
		}
		if cfg.pollInterval != "" {
			props["pollInterval"] = cfg.pollInterval
		}
		p, startErr := consumerproc.Start(workers[i], props, 0, logDir, func(string, int64) {})
		if startErr != nil {
			return startErr
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		if readyErr := p.WaitReady(ctx); readyErr != nil {
			return readyErr
		}
	}
	if _, err = b.waitFor(ctx, consumer, 5*time.Minute, func(owners map[string]int, claims int) bool {
		return fair(owners, int(b.shards), workers...) && claims == 0
	}); err != nil {
		return err
	}
	victim := procs[0]
	procs = procs[1:]
	killed := time.Now()
	victim.Kill()
	survivors := workers[1:]
	back, err := b.waitFor(ctx, consumer, 5*time.Minute, func(owners map[string]int, _ int) bool {
		n := 0
		for _, w := range survivors {
			n += owners[w]
		}
		return n == int(b.shards)
	})
	if err != nil {
		return err
	}
	fmt.Printf("failover %d replica processes on %d shards (leaseDuration 10s, the default): %s SIGKILLed; the others own every shard %v later\n",
		cfg.replicas, b.shards, workers[0], back.Sub(killed).Round(time.Millisecond))
	return nil
}
