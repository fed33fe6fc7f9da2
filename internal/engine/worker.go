package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/delivery"
	"github.com/dapr-kinesis/kinesis/internal/leases"
	"github.com/dapr-kinesis/kinesis/internal/shardread"
	"github.com/dapr/kit/logger"
)

// stopReason is why a worker stopped delivering its shard.
type stopReason string

const (
	stopFinished stopReason = "the shard was read to its end"
	stopLost     stopReason = "the lease was lost"
	stopHandoff  stopReason = "another replica claimed the lease"
	stopClosing  stopReason = "the consumer is closing"
)

// worker delivers one shard for as long as this replica holds its lease. Its states: reading and
// delivering until a stop reason arrives; then the one exit path writes what the reason calls for
// (SHARD_END, a handoff to the claimant, or a release with the final checkpoint; nothing once the
// lease is lost) and logs why it stopped.
type worker struct {
	e     *Engine
	lease *leases.Lease
	shard leases.Shard
	log   logger.Logger

	reasonOnce sync.Once
	reason     stopReason
}

func newWorker(e *Engine, l *leases.Lease) *worker {
	shard := l.Shard()
	return &worker{
		e:     e,
		lease: l,
		shard: shard,
		log:   e.log.WithFields(map[string]any{delivery.MetaShardID: shard.ID}),
	}
}

// stopWith records the first reason the worker must stop for.
func (w *worker) stopWith(r stopReason) {
	w.reasonOnce.Do(func() { w.reason = r })
}

func (w *worker) run() {
	checkpoint, written := w.consume()
	reason := w.reason
	log := w.log
	if checkpoint != "" {
		log = log.WithFields(map[string]any{"checkpoint": checkpoint})
	}
	ctx, cancel := w.e.finalWriteContext()
	defer cancel()
	var err error
	switch reason {
	case stopFinished:
		err = w.lease.Finish(ctx)
	case stopHandoff:
		err = w.lease.HandOff(ctx, checkpoint)
	case stopClosing:
		err = w.lease.Release(ctx, checkpoint)
	case stopLost:
		// Another replica owns the shard and reads it from the last checkpoint it can see.
	}
	switch {
	case errors.Is(err, leases.ErrLeaseLost):
		log.Infof("Stopped reading the shard (%s); the lease was lost meanwhile, records after checkpoint %q will be delivered again", reason, written)
	case err != nil:
		log.Warnf("Stopped reading the shard (%s); the final lease write failed, the lease expires and records after checkpoint %q will be delivered again: %v", reason, written, err)
	default:
		log.Infof("Stopped reading the shard: %s", reason)
	}
}

// consume reads and delivers the shard until a stop reason arrives. It is the worker's one loop: it
// takes batches while the contract has room, hands the contract the results of handler calls, wakes
// it for retries, and writes the watermark at most once per CheckpointEvery. It returns the watermark
// once the calls in flight ended ("" if nothing was done in this tenure) and the last checkpoint
// written.
func (w *worker) consume() (checkpoint, written string) {
	// stop ends delivery: no handler call starts after it. The handler's own context ends only when
	// the lease is lost or Close runs out of patience: a call in flight at a handoff or a Close may
	// finish and be checkpointed.
	stop, cancelStop := context.WithCancel(context.Background())
	defer cancelStop()
	handlerCtx, cancelHandler := context.WithCancel(w.e.handlerCtx)
	defer cancelHandler()
	quit := make(chan struct{})
	defer close(quit)
	go w.watch(stop, cancelStop, cancelHandler, quit)

	batches := make(chan shardread.Batch)
	readCtx, cancelRead := context.WithCancel(stop)
	readDone := make(chan struct{})
	reader := w.e.cfg.NewReader(w.shard)
	go func() {
		defer close(readDone)
		if err := reader.Run(readCtx, batches); err != nil && !errors.Is(err, shardread.ErrStopped) {
			w.log.Warnf("Shard reader ended: %v", err)
		}
	}()
	defer func() {
		cancelRead()
		<-readDone
	}()

	contract := delivery.NewShard(w.e.cfg.Handler, w.e.cfg.Delivery, w.shard.ID, w.shard.Checkpoint, w.log)
	// However delivery stops, the calls in flight end before the tenure's final checkpoint is taken:
	// their records count if they succeeded.
	defer func() {
		for contract.InFlight() > 0 {
			contract.Complete(stop, <-contract.Finished())
		}
		checkpoint = contract.Checkpoint()
	}()
	written = w.shard.Checkpoint
	lag := lagWatch{threshold: w.e.cfg.LagWarning, log: w.log}
	var (
		lastWrite time.Time
		flush     <-chan time.Time
		retry     <-chan time.Time
		ending    bool // the shard's last batch was added
	)
	flushTimer := time.NewTimer(time.Hour)
	defer flushTimer.Stop()
	retryTimer := time.NewTimer(time.Hour)
	defer retryTimer.Stop()
	save := func() {
		if checkpoint == "" || checkpoint == written {
			return
		}
		ctx, cancel := context.WithTimeout(stop, finalWriteTimeout)
		err := w.lease.Checkpoint(ctx, checkpoint)
		cancel()
		lastWrite = time.Now()
		switch {
		case err == nil:
			written = checkpoint
		case errors.Is(err, leases.ErrLeaseLost):
			w.stopWith(stopLost)
			cancelStop()
		case stop.Err() == nil:
			w.log.Warnf("Checkpoint %s not written, trying again with the next one: %v", checkpoint, err)
		}
	}

	for {
		in := batches
		if ending || contract.Full() {
			in = nil // reading waits until the watermark moves
		}
		select {
		case <-stop.Done():
			return checkpoint, written
		case <-flush:
			flush = nil
			save()
		case <-retry:
			retry = nil
		case r := <-contract.Finished():
			contract.Complete(stop, r)
		case b := <-in:
			contract.Add(b.Records)
			lag.observe(b.MillisBehindLatest)
			ending = b.End
		}
		if due := contract.Dispatch(stop, handlerCtx); !due.IsZero() {
			retryTimer.Reset(time.Until(due))
			retry = retryTimer.C
		}
		checkpoint = contract.Checkpoint()
		if ending && contract.Idle() {
			w.stopWith(stopFinished)
			return checkpoint, written
		}
		if checkpoint == written || flush != nil {
			continue
		}
		if wait := w.e.cfg.CheckpointEvery - time.Since(lastWrite); wait > 0 {
			flushTimer.Reset(wait)
			flush = flushTimer.C
			continue
		}
		save()
	}
}

// watch turns the lease's and the engine's signals into the worker's stop reason. Losing the lease
// also cancels the handler call in flight: its result could not be checkpointed any more.
func (w *worker) watch(stop context.Context, cancelStop, cancelHandler context.CancelFunc, quit <-chan struct{}) {
	select {
	case <-w.lease.Lost():
		w.stopWith(stopLost)
		cancelHandler()
		cancelStop()
		return
	case <-w.lease.HandoffRequested():
		w.stopWith(stopHandoff)
	case <-w.e.stopping:
		w.stopWith(stopClosing)
	case <-stop.Done():
	case <-quit:
		return
	}
	cancelStop()
	select {
	case <-w.lease.Lost():
		cancelHandler()
	case <-quit:
	}
}
