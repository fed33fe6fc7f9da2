package producer

import (
	"context"

	"github.com/dapr-kinesis/kinesis/internal/streaminfo"
)

// Stream is what the producer knows of its stream (how records are placed, the largest record it
// accepts), asking DescribeStreamSummary when that is due (see streaminfo), within the time a put
// would have; for a caller that validates records before it puts them.
func (p *Producer) Stream(ctx context.Context) streaminfo.Info {
	if info, fresh := p.info.Cached(); fresh { // every create asks: no contexts when nothing is due
		return info
	}
	ctx, cancel := p.callContext(ctx)
	defer cancel()
	return p.info.Get(ctx)
}

// Describe asks DescribeStreamSummary now: whether the stream can be described at all (Ping), and
// what it says. Its error is classified (awserr).
func (p *Producer) Describe(ctx context.Context) (streaminfo.Info, error) {
	return p.info.Describe(ctx)
}

// recordSizeLimit is the stream's maximum record size.
func (p *Producer) recordSizeLimit(ctx context.Context) int {
	return p.info.Get(ctx).MaxRecordSize
}
