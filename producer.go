package kinesis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/backoff"
	"github.com/dapr-kinesis/kinesis/internal/shardmap"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/kit/logger"
)

const (
	// defaultMaxRecordSize is AWS's default, used when the stream's own limit cannot be read.
	defaultMaxRecordSize = 1 << 20
	// throttleRetryBudget bounds throttling retries for callers whose context has no deadline.
	throttleRetryBudget = 30 * time.Second
	throttleRetryFirst  = 50 * time.Millisecond
	throttleRetryMax    = 2 * time.Second
	// defaultCloseGrace is how long Close lets requests in flight finish before it cancels them.
	defaultCloseGrace = 5 * time.Second
)

// producer writes records for the output binding.
type producer struct {
	client *kinesis.Client
	meta   *kinesisMetadata
	logger logger.Logger

	// gate admits calls until Close; calls counts them so Close can wait for their answers.
	gate   sync.RWMutex
	closed bool
	calls  sync.WaitGroup

	// abortCtx is cancelled, with ErrClosed, when Close's grace period ends or Close returns.
	abortCtx   context.Context //nolint:containedctx // lifecycle of the requests in flight
	abort      context.CancelCauseFunc
	closeGrace time.Duration // tests shorten it

	slots   chan struct{} // one per PutRecords request in flight, coalesced or bulk
	batcher *batcher      // nil when batchLinger is 0

	// With aggregation kpl: the stream's open shards, which user records are grouped by.
	aggregate    bool
	shards       *shardmap.Cache
	shardsDenied atomic.Bool // ListShards is not allowed: group by hash key only
	shardsWarned atomic.Bool

	sizeMu        sync.Mutex
	recordSizeMax int           // 0 until DescribeStreamSummary answered
	sizeLookup    chan struct{} // closed when the lookup in progress ends; nil when none runs
	sizeWarned    bool
}

func newProducer(client *kinesis.Client, meta *kinesisMetadata, log logger.Logger) *producer {
	p := &producer{
		client:     client,
		meta:       meta,
		logger:     log,
		closeGrace: defaultCloseGrace,
		slots:      make(chan struct{}, max(meta.MaxInFlightBatches, 1)),
	}
	p.abortCtx, p.abort = context.WithCancelCause(context.Background())
	if meta.BatchLinger > 0 {
		p.batcher = newBatcher(p, meta.BatchLinger)
	}
	if meta.Aggregation == aggregationKPL {
		p.aggregate = true
		p.shards = shardmap.NewCache(client, meta.StreamName, shardMapMinInterval)
	}
	return p
}

// Invoke runs an output operation.
func (a *AWSKinesis) Invoke(ctx context.Context, req *bindings.InvokeRequest) (*bindings.InvokeResponse, error) {
	if req == nil {
		return nil, errNilRequest
	}
	if a.closed.Load() {
		return nil, ErrClosed
	}
	if !a.initDone.Load() {
		return nil, errors.New("kinesis binding error: Invoke before Init")
	}
	switch req.Operation {
	case bindings.CreateOperation:
		return a.producer.create(ctx, req)
	case bulkCreateOperation:
		return a.producer.bulkCreate(ctx, req)
	default:
		return nil, unsupportedOperation(req.Operation)
	}
}

// inFlight is the number of PutRecords requests in flight.
func (p *producer) inFlight() int { return len(p.slots) }

// releaseSlot frees a request slot and, when it was the last, tells the batcher: a batch that is
// lingering can go at once to a server that has nothing else to do.
func (p *producer) releaseSlot() {
	<-p.slots
	if p.batcher != nil && p.inFlight() == 0 {
		select {
		case p.batcher.idle <- struct{}{}:
		default: // already signalled
		}
	}
}

// enter admits a call unless Close has begun; the caller must call the returned func when done.
func (p *producer) enter() (leave func(), err error) {
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
func (p *producer) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
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

func (p *producer) create(ctx context.Context, req *bindings.InvokeRequest) (*bindings.InvokeResponse, error) {
	rec, err := parseCreateRequest(req.Data, req.Metadata)
	if err != nil {
		return nil, fmt.Errorf("kinesis binding error: %w", err)
	}
	leave, err := p.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	ctx, cancel := p.callContext(ctx)
	defer cancel()

	if err := p.checkSize(ctx, &rec); err != nil {
		return nil, err
	}
	var res putResult
	// PutRecords has no SequenceNumberForOrdering and cannot carry a record over 5 MiB.
	if p.batcher == nil || rec.sequenceNumberForOrdering != "" || rec.size() > maxBatchBytes {
		res = p.putRecord(ctx, &rec)
	} else {
		if p.aggregate {
			p.place(ctx, &rec)
		}
		res = p.batcher.put(ctx, &rec)
	}
	switch {
	case res.err == ErrClosed: //nolint:errorlint // put returns the bare sentinel when Close came first
		return nil, ErrClosed
	case res.err != nil:
		return nil, fmt.Errorf("kinesis binding error: put record on stream %q: %w", p.meta.StreamName, res.err)
	}
	resp := &bindings.InvokeResponse{Metadata: map[string]string{
		respShardID:        res.shardID,
		respSequenceNumber: res.sequenceNumber,
	}}
	if res.aggregated {
		resp.Metadata[respSubSequenceNumber] = strconv.Itoa(res.sub)
	}
	return resp, nil
}

// checkSize rejects a record larger than the stream accepts before anything is sent.
func (p *producer) checkSize(ctx context.Context, rec *record) error {
	if err := rec.checkSize(p.recordSizeLimit(ctx)); err != nil {
		return fmt.Errorf("kinesis binding error: %w", err)
	}
	return nil
}

// putRecord sends one record with PutRecord, retrying throttling with backoff until ctx ends.
func (p *producer) putRecord(ctx context.Context, rec *record) putResult {
	in := putRecordInput(p.meta.StreamName, rec)
	out, err := retryThrottled(ctx, func(ctx context.Context) (*kinesis.PutRecordOutput, error) {
		out, err := p.client.PutRecord(ctx, in)
		if err != nil {
			return out, requestError(ctx, err)
		}
		return out, nil
	})
	switch {
	case err == nil:
		return putResult{shardID: aws.ToString(out.ShardId), sequenceNumber: aws.ToString(out.SequenceNumber)}
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

// recordSizeLimit is the stream's maximum record size, read once. When it cannot be read (an IAM
// policy that allows only puts, say) AWS's default of 1 MiB applies. One lookup runs at a time: a
// burst of first calls would otherwise each describe the stream and reach the batcher one by one.
func (p *producer) recordSizeLimit(ctx context.Context) int {
	p.sizeMu.Lock()
	if known := p.recordSizeMax; known > 0 {
		p.sizeMu.Unlock()
		return known
	}
	if wait := p.sizeLookup; wait != nil {
		p.sizeMu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
		}
		p.sizeMu.Lock()
		defer p.sizeMu.Unlock()
		return cmp.Or(p.recordSizeMax, defaultMaxRecordSize) // a failed lookup is not repeated by each waiter
	}
	p.sizeLookup = make(chan struct{})
	p.sizeMu.Unlock()

	limit, err := p.maxRecordSize(ctx)
	p.sizeMu.Lock()
	close(p.sizeLookup)
	p.sizeLookup = nil
	p.sizeMu.Unlock()
	if err == nil {
		return limit
	}
	if errors.Is(err, ErrAccessDenied) {
		p.sizeMu.Lock()
		p.recordSizeMax = defaultMaxRecordSize
		warn := !p.sizeWarned
		p.sizeWarned = true
		p.sizeMu.Unlock()
		if warn {
			p.logger.Warnf("kinesis binding: cannot read the maximum record size of stream %q (kinesis:DescribeStreamSummary denied); assuming 1 MiB", p.meta.StreamName)
		}
	}
	return defaultMaxRecordSize
}

// maxRecordSize asks DescribeStreamSummary for the stream's limit and remembers it.
func (p *producer) maxRecordSize(ctx context.Context) (int, error) {
	out, err := p.client.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{
		StreamName: aws.String(p.meta.StreamName),
	})
	if err != nil {
		return 0, awserr.Classify(err)
	}
	limit := defaultMaxRecordSize
	if s := out.StreamDescriptionSummary; s != nil && s.MaxRecordSizeInKiB != nil && *s.MaxRecordSizeInKiB > 0 {
		limit = int(*s.MaxRecordSizeInKiB) << 10
	}
	p.sizeMu.Lock()
	p.recordSizeMax = limit
	p.sizeMu.Unlock()
	return limit, nil
}

// Close stops accepting records, sends what is buffered at once and waits for every call to be
// answered. Requests still in flight after the grace period are cancelled: their callers get an
// error that says the record may have been written. Later calls return nil.
func (p *producer) Close() error {
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
