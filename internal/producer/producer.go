package producer

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/backoff"
	"github.com/dapr-kinesis/kinesis/internal/shardmap"
	"github.com/dapr-kinesis/kinesis/internal/streaminfo"
	"github.com/dapr/kit/logger"
)

const (
	// DefaultMaxRecordSize is AWS's default, used when the stream's own limit cannot be read.
	DefaultMaxRecordSize = streaminfo.DefaultMaxRecordSize
	// throttleRetryBudget bounds throttling retries for callers whose context has no deadline.
	throttleRetryBudget = 30 * time.Second
	throttleRetryFirst  = 50 * time.Millisecond
	throttleRetryMax    = 2 * time.Second
	// DefaultCloseGrace is how long Close lets requests in flight finish before it cancels them.
	DefaultCloseGrace = 5 * time.Second
)

// Config is what a Producer writes with.
type Config struct {
	Client *kinesis.Client
	Stream string
	// MaxInFlight bounds the PutRecords requests in flight, gathered or PutMany's (at least 1).
	MaxInFlight int
	// Linger is how long a record may wait for others to share its request; 0 sends each Put in a
	// request of its own.
	Linger time.Duration
	// Aggregate packs records bound for the same shard into KPL aggregated records.
	Aggregate bool
	// CloseGrace is how long Close lets requests in flight finish; 0 means DefaultCloseGrace.
	CloseGrace time.Duration
	// StreamRefresh is how often what the stream says of itself is asked again; 0 means
	// streaminfo.DefaultRefresh.
	StreamRefresh time.Duration
	Log           logger.Logger
}

// Producer writes records to one stream. Its methods are safe for concurrent use.
type Producer struct {
	client *kinesis.Client
	stream string
	logger logger.Logger

	// gate admits calls until Close; calls counts them so Close can wait for their answers.
	gate   sync.RWMutex
	closed bool
	calls  sync.WaitGroup

	// abortCtx is cancelled, with ErrClosed, when Close's grace period ends or Close returns.
	abortCtx   context.Context //nolint:containedctx // lifecycle of the requests in flight
	abort      context.CancelCauseFunc
	closeGrace time.Duration

	slots   chan struct{} // one per PutRecords request in flight, gathered or PutMany's
	batcher *batcher      // nil when Linger is 0

	// With Aggregate: the stream's open shards, which user records are grouped by.
	aggregate    bool
	shards       *shardmap.Cache
	shardsDenied atomic.Bool // ListShards is not allowed: group by hash key only
	shardsWarned atomic.Bool

	// info is what DescribeStreamSummary says of the stream: its record size limit, and whether it
	// places records itself (then nothing is aggregated).
	info       *streaminfo.Source
	autoWarned atomic.Bool
}

// New returns a Producer; it sends nothing until the first put.
func New(cfg Config) *Producer {
	p := &Producer{
		client:     cfg.Client,
		stream:     cfg.Stream,
		logger:     cfg.Log,
		closeGrace: cmp.Or(cfg.CloseGrace, DefaultCloseGrace),
		slots:      make(chan struct{}, max(cfg.MaxInFlight, 1)),
		info:       streaminfo.New(cfg.Client, cfg.Stream, cfg.StreamRefresh, cfg.Log),
	}
	p.abortCtx, p.abort = context.WithCancelCause(context.Background())
	if cfg.Linger > 0 {
		p.batcher = newBatcher(p, cfg.Linger)
	}
	if cfg.Aggregate {
		p.aggregate = true
		p.shards = shardmap.NewCache(cfg.Client, cfg.Stream, ShardMapMinInterval)
	}
	return p
}

// inFlight is the number of PutRecords requests in flight.
func (p *Producer) inFlight() int { return len(p.slots) }

// releaseSlot frees a request slot and, when it was the last, tells the batcher: a batch that is
// lingering can go at once to a server that has nothing else to do.
func (p *Producer) releaseSlot() {
	<-p.slots
	if p.batcher != nil && p.inFlight() == 0 {
		select {
		case p.batcher.idle <- struct{}{}:
		default: // already signalled
		}
	}
}

// enter admits a call unless Close has begun; the caller must call the returned func when done.
func (p *Producer) enter() (leave func(), err error) {
	p.gate.RLock()
	defer p.gate.RUnlock()
	if p.closed {
		return nil, ErrClosed
	}
	p.calls.Add(1)
	return p.calls.Done, nil
}

// callContext bounds a call: a caller without a deadline gets the retry budget, and Close's grace
// period ends every call still running.
func (p *Producer) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	cancelBudget := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancelBudget = context.WithTimeout(ctx, throttleRetryBudget)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(p.abortCtx, func() { cancel(context.Cause(p.abortCtx)) })
	return ctx, func() {
		stop()
		cancel(nil)
		cancelBudget()
	}
}

// Put writes one record and returns where it went. The errors: ErrClosed when Close came first
// (nothing was sent); a *RecordSizeError when the record is larger than the stream accepts (nothing
// was sent); otherwise the put's failure, which says whether the record may have been written.
func (p *Producer) Put(ctx context.Context, rec Record) (Result, error) {
	leave, err := p.enter()
	if err != nil {
		return Result{}, err
	}
	defer leave()
	ctx, cancel := p.callContext(ctx)
	defer cancel()

	r := &record{Record: rec}
	if err := r.CheckSize(p.recordSizeLimit(ctx)); err != nil {
		return Result{}, err
	}
	var res putResult
	// PutRecords has no SequenceNumberForOrdering and cannot carry a record over 5 MiB.
	if p.batcher == nil || r.SequenceNumberForOrdering != "" || r.Size() > MaxBatchBytes {
		res = p.putRecord(ctx, r)
	} else {
		if p.aggregating() {
			p.place(ctx, r)
		}
		res = p.batcher.put(ctx, r)
	}
	return res.Result, res.err
}

// putRecord sends one record with PutRecord, retrying throttling with backoff until ctx ends.
func (p *Producer) putRecord(ctx context.Context, rec *record) putResult {
	in := putRecordInput(p.stream, rec)
	out, err := retryThrottled(ctx, func(ctx context.Context) (*kinesis.PutRecordOutput, error) {
		out, err := p.client.PutRecord(ctx, in)
		if err != nil {
			return out, requestError(ctx, err)
		}
		return out, nil
	})
	switch {
	case err == nil:
		return putResult{Result: Result{ShardID: aws.ToString(out.ShardId), SequenceNumber: aws.ToString(out.SequenceNumber)}}
	case awserr.IsRetryable(err): // throttled to the end: the last attempt was rejected
		return putResult{err: notWritten(err)}
	default:
		return putResult{err: requestOutcome(err)}
	}
}

// retryThrottled calls fn until it succeeds, fails with an error other than throttling, or ctx ends
// (callContext gives every call a deadline). The last error is returned.
func retryThrottled[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	wait := throttleRetryFirst
	for {
		out, err := fn(ctx)
		if err == nil || !awserr.IsRetryable(err) {
			return out, err
		}
		if !backoff.Sleep(ctx, backoff.Jitter(wait)) {
			return out, fmt.Errorf("%w (gave up retrying: %w)", err, context.Cause(ctx))
		}
		wait = min(2*wait, throttleRetryMax)
	}
}

// Close stops accepting records, sends what is buffered at once and waits for every call to be
// answered. Requests still in flight after the grace period are cancelled: their callers get an
// error that says the record may have been written. Later calls return nil.
func (p *Producer) Close() error {
	p.gate.Lock()
	if p.closed {
		p.gate.Unlock()
		return nil
	}
	p.closed = true
	p.gate.Unlock()
	defer p.abort(ErrClosed)

	if p.batcher != nil {
		if n := p.batcher.waiting.Load(); n > 0 {
			p.logger.Debugf("kinesis binding: closing; sending %d buffered or in-flight records first", n)
		}
		close(p.batcher.stop)
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		p.calls.Wait()
		if p.batcher != nil && p.batcher.started() {
			<-p.batcher.done // requests whose callers have left
		}
	}()
	grace := time.NewTimer(p.closeGrace)
	defer grace.Stop()
	select {
	case <-finished:
	case <-grace.C:
		p.abort(ErrClosed)
		<-finished
	}
	return nil
}

// Waiting is how many records gathered for a shared request still have a caller waiting for them.
func (p *Producer) Waiting() int64 {
	if p.batcher == nil {
		return 0
	}
	return p.batcher.waiting.Load()
}

// KnownShards is how many open shards aggregation currently groups records by; 0 before the shard
// map is first loaded, without aggregation, or when no map can be had.
func (p *Producer) KnownShards() int {
	if p.shards == nil {
		return 0
	}
	if m := p.shards.Current(); m != nil {
		return m.Len()
	}
	return 0
}
