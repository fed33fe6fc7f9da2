package kinesis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

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
)

// producer writes records for the output binding.
type producer struct {
	client *kinesis.Client
	meta   *kinesisMetadata
	logger logger.Logger

	closed atomic.Bool

	sizeMu        sync.Mutex
	recordSizeMax int // 0 until DescribeStreamSummary answered
	sizeWarned    bool
}

func newProducer(client *kinesis.Client, meta *kinesisMetadata, log logger.Logger) *producer {
	return &producer{client: client, meta: meta, logger: log}
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
	default:
		return nil, unsupportedOperation(req.Operation)
	}
}

func (p *producer) create(ctx context.Context, req *bindings.InvokeRequest) (*bindings.InvokeResponse, error) {
	rec, err := parseCreateRequest(req.Data, req.Metadata)
	if err != nil {
		return nil, fmt.Errorf("kinesis binding error: %w", err)
	}
	if err := p.checkSize(ctx, &rec); err != nil {
		return nil, err
	}
	out, err := p.putRecord(ctx, &rec)
	if err != nil {
		return nil, fmt.Errorf("kinesis binding error: put record on stream %q: %w", p.meta.StreamName, err)
	}
	return &bindings.InvokeResponse{Metadata: map[string]string{
		respShardID:        aws.ToString(out.ShardId),
		respSequenceNumber: aws.ToString(out.SequenceNumber),
	}}, nil
}

// checkSize rejects a record larger than the stream accepts before anything is sent.
func (p *producer) checkSize(ctx context.Context, rec *record) error {
	limit := p.recordSizeLimit(ctx)
	if rec.size() > limit {
		return fmt.Errorf("kinesis binding error: record of %d bytes (data %d + partition key %d) exceeds the stream's maximum record size of %d bytes",
			rec.size(), len(rec.data), len(rec.partitionKey), limit)
	}
	return nil
}

// putRecord sends one record, retrying throttling with backoff until the caller's deadline.
func (p *producer) putRecord(ctx context.Context, rec *record) (*kinesis.PutRecordOutput, error) {
	in := &kinesis.PutRecordInput{
		StreamName:   aws.String(p.meta.StreamName),
		Data:         rec.data,
		PartitionKey: aws.String(rec.partitionKey),
	}
	if rec.explicitHashKey != "" {
		in.ExplicitHashKey = aws.String(rec.explicitHashKey)
	}
	if rec.sequenceNumberForOrdering != "" {
		in.SequenceNumberForOrdering = aws.String(rec.sequenceNumberForOrdering)
	}
	return retryThrottled(ctx, func(ctx context.Context) (*kinesis.PutRecordOutput, error) {
		out, err := p.client.PutRecord(ctx, in)
		return out, classifyAWSError(err)
	})
}

// retryThrottled calls fn until it succeeds, fails with an error other than throttling, or the
// context (or, without a deadline, the retry budget) runs out. The last error is returned.
func retryThrottled[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, throttleRetryBudget)
		defer cancel()
	}
	wait := throttleRetryFirst
	for {
		out, err := fn(ctx)
		if err == nil || !isRetryable(err) {
			return out, err
		}
		timer := time.NewTimer(jitter(wait))
		select {
		case <-ctx.Done():
			timer.Stop()
			return out, fmt.Errorf("%w (gave up retrying: %w)", err, context.Cause(ctx))
		case <-timer.C:
		}
		wait = min(2*wait, throttleRetryMax)
	}
}

// recordSizeLimit is the stream's maximum record size, read once. When it cannot be read (an IAM
// policy that allows only puts, say) AWS's default of 1 MiB applies.
func (p *producer) recordSizeLimit(ctx context.Context) int {
	p.sizeMu.Lock()
	known := p.recordSizeMax
	p.sizeMu.Unlock()
	if known > 0 {
		return known
	}
	limit, err := p.maxRecordSize(ctx)
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
		return 0, classifyAWSError(err)
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

// Close stops accepting records.
func (p *producer) Close() error {
	p.closed.Store(true)
	return nil
}
