package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/consumerproc"
)

// failover runs the replicas as processes (consumerproc), waits for a fair split, SIGKILLs one and
// prints how long until the others own every shard again. Each run has a stream of its own.
func (b *bench) failover(ctx context.Context) error {
	cfg := b.cfg
	if cfg.replicas < 2 {
		return errors.New("failover needs -replicas of at least 2")
	}
	stream, consumer, err := b.newStream(ctx)
	if err != nil {
		return err
	}
	logDir, err := os.MkdirTemp("", "kinesis-bench-leases-"+string(b.protocol)+"-")
	if err != nil {
		return fmt.Errorf("log directory: %w", err)
	}
	workers := workerIDs(cfg.replicas)
	procs := make([]*consumerproc.Proc, 0, cfg.replicas)
	defer func() {
		for _, p := range procs {
			_ = p.Stop()
		}
	}()
	for _, w := range workers {
		props := b.props(stream, consumer, w)
		if cfg.pollInterval != "" {
			props["pollInterval"] = cfg.pollInterval
		}
		p, startErr := consumerproc.Start(w, props, 0, logDir, func(string, int64) {})
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
	b.fig.failover = append(b.fig.failover, back.Sub(killed))
	b.sayf("failover", "run %d/%d: %d replica processes on %d shards (leaseDuration 10s, the default): replica 0 SIGKILLed; the others own every shard %v later",
		len(b.fig.failover), cfg.failoverRuns, cfg.replicas, b.shards, back.Sub(killed).Round(time.Millisecond))
	return nil
}
