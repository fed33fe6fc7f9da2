// Package streaminfo knows what the producer must know of its stream before it writes: how records
// are placed (by partition key, or by the service itself: RecordDistributionStrategy AUTO), the
// largest record it accepts, and its ARN and capacity mode, all from one DescribeStreamSummary.
//
// A stream's distribution strategy can change at any time and takes effect at once, so the answer
// is asked again when a caller says the stream changed (Invalidate) and otherwise at most once per
// refresh interval. When the stream cannot be described (an IAM policy without
// kinesis:DescribeStreamSummary, say) the defaults apply: placement by key and AWS's default maximum
// record size, as before the stream said otherwise; a denial is logged once.
package streaminfo

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr/kit/logger"
)

// DefaultMaxRecordSize is AWS's default maximum record size (data and partition key), used when the
// stream does not report its own.
const DefaultMaxRecordSize = 1 << 20

// DefaultRefresh is how long an answer is used before it is asked again.
const DefaultRefresh = time.Minute

// Info is what DescribeStreamSummary said of the stream, or the defaults when it could not say.
type Info struct {
	// Auto is set when the stream places records itself (RecordDistributionStrategy AUTO): partition
	// keys are optional and ignored, explicit hash keys are ignored, SequenceNumberForOrdering is
	// refused, and KPL aggregates would land on shards their keys do not belong to.
	Auto          bool
	OnDemand      bool
	MaxRecordSize int // bytes
	ARN           string
	// Described is false while the defaults stand in for an answer.
	Described bool
}

func defaults() Info { return Info{MaxRecordSize: DefaultMaxRecordSize} }

// DescribeAPI is the call Source makes; *kinesis.Client has it.
type DescribeAPI interface {
	DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, optFns ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
}

// Source keeps the stream's Info. Its methods are safe for concurrent use.
type Source struct {
	api     DescribeAPI
	stream  string
	refresh time.Duration
	log     logger.Logger
	now     func() time.Time // tests move time

	mu      sync.Mutex
	info    Info
	askedAt time.Time     // zero until an answer (or a denial) was had; then when
	stale   bool          // Invalidate was called since
	lookup  chan struct{} // closed when the lookup in progress ends; nil when none runs
	denied  bool          // the last lookup was denied: logged once per denial episode
}

// New returns a Source for stream (a name); refresh 0 means DefaultRefresh. It asks nothing yet.
func New(api DescribeAPI, stream string, refresh time.Duration, log logger.Logger) *Source {
	if refresh <= 0 {
		refresh = DefaultRefresh
	}
	return &Source{api: api, stream: stream, refresh: refresh, log: log, now: time.Now, info: defaults()}
}

// Current is the last answer, or the defaults, without asking.
func (s *Source) Current() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info
}

// Cached is the last answer, and whether it is still fresh: Get would not ask.
func (s *Source) Cached() (Info, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info, !s.due()
}

// Invalidate says the stream may have changed: the next Get asks again.
func (s *Source) Invalidate() {
	s.mu.Lock()
	s.stale = true
	s.mu.Unlock()
}

// Get returns the stream's Info, asking DescribeStreamSummary first when there is no answer yet,
// when Invalidate was called, or when the answer is older than the refresh interval. One lookup
// runs at a time: callers that find one running wait for it (or for ctx) and take its result. A
// failed lookup leaves the last answer (or the defaults) in place, and the next Get asks again.
func (s *Source) Get(ctx context.Context) Info {
	s.mu.Lock()
	if !s.due() {
		defer s.mu.Unlock()
		return s.info
	}
	if wait := s.lookup; wait != nil {
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
		}
		return s.Current()
	}
	s.lookup = make(chan struct{})
	s.mu.Unlock()

	info, _ := s.Describe(ctx)
	return info
}

func (s *Source) due() bool {
	return s.askedAt.IsZero() || s.stale || s.now().Sub(s.askedAt) >= s.refresh
}

// Describe asks DescribeStreamSummary now and keeps the answer. Its error is classified (awserr)
// and tells whether the stream can be described at all; the Info returned is then the last answer,
// or the defaults. A denial counts as an answer for the refresh interval, so that a policy without
// the permission costs one refused call a minute, not one a put.
func (s *Source) Describe(ctx context.Context) (Info, error) {
	out, err := s.api.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(s.stream)})
	if err != nil {
		err = awserr.Classify(err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lookup != nil {
		close(s.lookup)
		s.lookup = nil
	}
	switch {
	case err == nil:
		s.info, s.askedAt, s.stale, s.denied = infoOf(out.StreamDescriptionSummary), s.now(), false, false
	case errors.Is(err, awserr.ErrAccessDenied):
		if !s.denied {
			s.log.Warnf("kinesis binding: cannot describe stream %q (kinesis:DescribeStreamSummary denied); assuming records are placed by partition key and a maximum record size of 1 MiB", s.stream)
		}
		s.askedAt, s.stale, s.denied = s.now(), false, true
	}
	return s.info, err
}

func infoOf(sum *types.StreamDescriptionSummary) Info {
	info := defaults()
	info.Described = true
	if sum == nil {
		return info
	}
	info.Auto = sum.RecordDistributionStrategy == types.RecordDistributionStrategyAuto
	info.OnDemand = sum.StreamModeDetails != nil && sum.StreamModeDetails.StreamMode == types.StreamModeOnDemand
	info.ARN = aws.ToString(sum.StreamARN)
	if kib := aws.ToInt32(sum.MaxRecordSizeInKiB); kib > 0 {
		info.MaxRecordSize = int(kib) << 10
	}
	return info
}
