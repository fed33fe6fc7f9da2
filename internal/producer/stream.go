package producer

import (
	"cmp"
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
)

// RecordSizeLimit is the stream's maximum record size, as Put and PutMany check it, for a caller
// that validates records before it puts them. It asks the stream at most once (see
// recordSizeLimit), within the time a put would have.
func (p *Producer) RecordSizeLimit(ctx context.Context) int {
	ctx, cancel := p.callContext(ctx)
	defer cancel()
	return p.recordSizeLimit(ctx)
}

// recordSizeLimit is the stream's maximum record size, read once. When it cannot be read (an IAM
// policy that allows only puts, say) AWS's default of 1 MiB applies. One lookup runs at a time: a
// burst of first calls would otherwise each describe the stream and reach the batcher one by one.
func (p *Producer) recordSizeLimit(ctx context.Context) int {
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
		return cmp.Or(p.recordSizeMax, DefaultMaxRecordSize) // a failed lookup is not repeated by each waiter
	}
	p.sizeLookup = make(chan struct{})
	p.sizeMu.Unlock()

	limit, err := p.MaxRecordSize(ctx)
	p.sizeMu.Lock()
	close(p.sizeLookup)
	p.sizeLookup = nil
	p.sizeMu.Unlock()
	if err == nil {
		return limit
	}
	if errors.Is(err, awserr.ErrAccessDenied) {
		p.sizeMu.Lock()
		p.recordSizeMax = DefaultMaxRecordSize
		warn := !p.sizeWarned
		p.sizeWarned = true
		p.sizeMu.Unlock()
		if warn {
			p.logger.Warnf("kinesis binding: cannot read the maximum record size of stream %q (kinesis:DescribeStreamSummary denied); assuming 1 MiB", p.stream)
		}
	}
	return DefaultMaxRecordSize
}

// MaxRecordSize asks DescribeStreamSummary for the stream's limit and remembers it. Its error is
// classified (awserr) and also tells whether the stream can be described at all.
func (p *Producer) MaxRecordSize(ctx context.Context) (int, error) {
	out, err := p.client.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{
		StreamName: aws.String(p.stream),
	})
	if err != nil {
		return 0, awserr.Classify(err)
	}
	limit := DefaultMaxRecordSize
	if s := out.StreamDescriptionSummary; s != nil && s.MaxRecordSizeInKiB != nil && *s.MaxRecordSizeInKiB > 0 {
		limit = int(*s.MaxRecordSizeInKiB) << 10
	}
	p.sizeMu.Lock()
	p.recordSizeMax = limit
	p.sizeMu.Unlock()
	return limit, nil
}
