// Package engine runs a consumer replica: the lease coordinator decides which shards it reads, and
// for each leased shard a worker feeds a shard reader's batches through the delivery contract,
// checkpoints what was delivered and, when the lease ends, hands it over, releases or finishes it.
package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/delivery"
	"github.com/dapr-kinesis/kinesis/internal/leases"
	"github.com/dapr-kinesis/kinesis/internal/shardread"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/kit/logger"
)

// Close's timeline, counted from its start. The contract is 5 s; the rest is margin for a loaded
// machine.
const (
	// handlerGrace is how long a handler call in flight may run before its context is cancelled. A
	// call that completes within it is checkpointed.
	handlerGrace = 3 * time.Second
	// releaseStuckAfter is when the leases of shards whose handler call still has not returned are
	// released without waiting for it: their record is delivered again by the next owner.
	releaseStuckAfter = 3500 * time.Millisecond
	// closeTimeout bounds Close.
	closeTimeout = 4500 * time.Millisecond

	// defaultCheckpointEvery bounds the lease-table writes of a busy shard: at most one checkpoint a
	// second, plus the final one when the lease ends. A crash redelivers at most that much.
	defaultCheckpointEvery = time.Second
	// finalWriteTimeout bounds a handoff, release or finish written outside Close.
	finalWriteTimeout = 10 * time.Second
)

// Config configures an Engine.
type Config struct {
	Leases leases.Config
	// NewReader returns the reader of a shard just leased.
	NewReader func(leases.Shard) shardread.Reader
	Handler   bindings.Handler
	// HandlerContext carries the values handler calls get (Read's context); its cancellation is
	// ignored: ending Read stops the engine gracefully instead.
	HandlerContext context.Context //nolint:containedctx // values for handler calls, not a lifetime
	Delivery       delivery.Settings
	// CheckpointEvery is the least time between two checkpoints of a shard; 0 means one second.
	CheckpointEvery time.Duration
	// LagWarning is the lag (MillisBehindLatest) past which a shard logs a warning; 0: never.
	LagWarning time.Duration
	Log        logger.Logger
}

// Engine is a running consumer replica.
type Engine struct {
	cfg   Config
	coord *leases.Coordinator
	log   logger.Logger

	abandon context.CancelFunc // ends the coordinator without releasing: only when Close overruns
	runDone chan struct{}
	runErr  error

	handlerCtx     context.Context //nolint:containedctx // parent of every handler call's context
	cancelHandlers context.CancelFunc

	// stopping is closed when Close begins: workers stop delivering, checkpoint and release.
	stopping      chan struct{}
	closeDeadline time.Time // set before stopping is closed

	mu      sync.Mutex
	workers map[*worker]struct{}
	// drained, once Close waits for it, is closed when the last worker ends. A counter and a channel
	// rather than a WaitGroup: the coordinator may hand over a lease while Close is waiting.
	drained chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Start creates the lease table if needed and starts the coordinator; it returns once the engine
// runs. Leases are taken in the background.
func Start(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = defaultCheckpointEvery
	}
	if err := leases.EnsureTable(ctx, cfg.Leases.DB, cfg.Leases.Table, cfg.Log); err != nil {
		return nil, err
	}
	coord, err := leases.New(cfg.Leases)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:      cfg,
		coord:    coord,
		log:      cfg.Log,
		runDone:  make(chan struct{}),
		stopping: make(chan struct{}),
		workers:  map[*worker]struct{}{},
	}
	e.handlerCtx, e.cancelHandlers = context.WithCancel(context.WithoutCancel(cfg.HandlerContext))
	runCtx, abandon := context.WithCancel(context.Background())
	e.abandon = abandon
	go func() {
		defer close(e.runDone)
		e.runErr = coord.Run(runCtx, e.acquired)
	}()
	return e, nil
}

// acquired starts a worker on a lease the coordinator just took. It runs on the coordinator's
// goroutine and must not block.
func (e *Engine) acquired(l *leases.Lease) {
	e.mu.Lock()
	defer e.mu.Unlock()
	w := newWorker(e, l)
	e.workers[w] = struct{}{}
	go func() {
		w.run()
		e.mu.Lock()
		defer e.mu.Unlock()
		delete(e.workers, w)
		if len(e.workers) == 0 && e.drained != nil {
			close(e.drained)
			e.drained = nil
		}
	}()
}

// isStopping reports whether Close has begun.
func (e *Engine) isStopping() bool {
	select {
	case <-e.stopping:
		return true
	default:
		return false
	}
}

// finalWriteContext bounds the last write of a lease: by Close's deadline once Close has begun.
func (e *Engine) finalWriteContext() (context.Context, context.CancelFunc) {
	if e.isStopping() {
		return context.WithDeadline(context.Background(), e.closeDeadline)
	}
	return context.WithTimeout(context.Background(), finalWriteTimeout)
}

// Close stops taking leases, lets each handler call in flight finish (for up to handlerGrace, then
// its context is cancelled), checkpoints, and releases every lease so that other replicas take the
// shards at their next pass. It returns within closeTimeout. A handler call that ignores its
// context is left running; its shard's lease is released anyway, its record delivered again by the
// next owner, and Close reports it.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() { e.closeErr = e.shutdown() })
	return e.closeErr
}

func (e *Engine) shutdown() error {
	began := time.Now()
	e.closeDeadline = began.Add(closeTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), e.closeDeadline)
	defer cancel()

	var errs []error
	if err := e.coord.StopTaking(ctx); err != nil {
		errs = append(errs, err)
	}
	close(e.stopping)

	workersDone := make(chan struct{})
	e.mu.Lock()
	if len(e.workers) == 0 {
		close(workersDone)
	} else {
		e.drained = workersDone
	}
	e.mu.Unlock()
	if !waitUntil(workersDone, began.Add(handlerGrace)) {
		e.cancelHandlers()
		if !waitUntil(workersDone, began.Add(releaseStuckAfter)) {
			errs = append(errs, e.releaseStuck(ctx)...)
		}
	}
	if !waitUntil(e.runDone, e.closeDeadline) {
		errs = append(errs, errors.New("kinesis binding error: the lease coordinator did not stop in time; leases not released expire"))
		e.abandon()
		<-e.runDone
	}
	e.cancelHandlers()
	e.abandon()
	if e.runErr != nil && !errors.Is(e.runErr, context.Canceled) {
		errs = append(errs, e.runErr)
	}
	e.log.Infof("Consumer stopped in %v", time.Since(began).Round(time.Millisecond))
	return errors.Join(errs...)
}

// releaseStuck releases the leases of workers still waiting for a handler call.
func (e *Engine) releaseStuck(ctx context.Context) []error {
	e.mu.Lock()
	stuck := make([]*worker, 0, len(e.workers))
	for w := range e.workers {
		stuck = append(stuck, w)
	}
	e.mu.Unlock()

	errs := make([]error, len(stuck))
	var wg sync.WaitGroup
	for i, w := range stuck {
		wg.Go(func() {
			shardID := w.lease.Shard().ID
			errs[i] = fmt.Errorf("kinesis binding error: the handler call on shard %s did not return within %v of Close; the shard's lease is released and its record will be delivered again", shardID, handlerGrace)
			if err := w.lease.Release(ctx, ""); err != nil && !errors.Is(err, leases.ErrLeaseLost) {
				errs[i] = errors.Join(errs[i], err)
			}
		})
	}
	wg.Wait()
	return errs
}

// waitUntil waits for done until the deadline; it reports whether done was closed.
func waitUntil(done <-chan struct{}, deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
