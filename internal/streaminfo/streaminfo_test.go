package streaminfo

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	smithy "github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/testlog"
)

// fakeDescribe answers DescribeStreamSummary from its fields, counting the calls; hold, when set,
// keeps each call waiting until it is closed.
type fakeDescribe struct {
	mu       sync.Mutex
	strategy types.RecordDistributionStrategy
	kib      int32
	err      error
	hold     chan struct{}
	calls    atomic.Int32
}

func (f *fakeDescribe) DescribeStreamSummary(ctx context.Context, _ *kinesis.DescribeStreamSummaryInput, _ ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error) {
	f.calls.Add(1)
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return &kinesis.DescribeStreamSummaryOutput{StreamDescriptionSummary: &types.StreamDescriptionSummary{
		StreamARN:                  aws.String("arn:aws:kinesis:us-east-1:123456789012:stream/s"),
		StreamModeDetails:          &types.StreamModeDetails{StreamMode: types.StreamModeOnDemand},
		RecordDistributionStrategy: f.strategy,
		MaxRecordSizeInKiB:         aws.Int32(f.kib),
	}}, nil
}

func (f *fakeDescribe) set(strategy types.RecordDistributionStrategy, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.strategy, f.err = strategy, err
}

// clock is a time a test moves by hand.
type clock struct{ at atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.at.Load()) }
func (c *clock) advance(d time.Duration) { c.at.Add(int64(d)) }
func newSource(t *testing.T, f *fakeDescribe) (*Source, *clock, *testlog.Buffer) {
	t.Helper()
	log, logs := testlog.New(t)
	s := New(f, "s", 0, log)
	c := &clock{}
	c.at.Store(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC).UnixNano())
	s.now = c.now
	return s, c, logs
}

func TestGetAsksOnceAMinuteUnlessToldTheStreamChanged(t *testing.T) {
	f := &fakeDescribe{strategy: types.RecordDistributionStrategyUserPartitionKey, kib: 10240}
	s, c, _ := newSource(t, f)
	assert.Equal(t, Info{MaxRecordSize: DefaultMaxRecordSize}, s.Current(), "defaults before any answer")

	_, fresh := s.Cached()
	assert.False(t, fresh, "nothing asked yet")
	info := s.Get(t.Context())
	cached, fresh := s.Cached()
	assert.True(t, fresh)
	assert.Equal(t, info, cached)
	assert.Equal(t, Info{OnDemand: true, MaxRecordSize: 10 << 20, ARN: "arn:aws:kinesis:us-east-1:123456789012:stream/s", Described: true}, info)
	f.set(types.RecordDistributionStrategyAuto, nil) // switched: seen only when asked again
	c.advance(59 * time.Second)
	assert.False(t, s.Get(t.Context()).Auto, "a minute has not passed")
	assert.Equal(t, int32(1), f.calls.Load())

	c.advance(time.Second)
	assert.True(t, s.Get(t.Context()).Auto, "asked again after a minute")
	assert.Equal(t, int32(2), f.calls.Load())

	f.set(types.RecordDistributionStrategyUserPartitionKey, nil)
	s.Invalidate()
	assert.False(t, s.Get(t.Context()).Auto, "asked again when told the stream changed")
	assert.False(t, s.Get(t.Context()).Auto)
	assert.Equal(t, int32(3), f.calls.Load())
}

func TestADenialKeepsTheDefaultsWarnsOnceAndIsAskedAgainAMinuteLater(t *testing.T) {
	denied := &types.AccessDeniedException{Message: aws.String("not allowed")}
	f := &fakeDescribe{err: denied}
	s, c, logs := newSource(t, f)

	info, err := s.Describe(t.Context())
	require.ErrorIs(t, err, awserr.ErrAccessDenied)
	assert.Equal(t, Info{MaxRecordSize: DefaultMaxRecordSize}, info)
	for range 5 {
		assert.Equal(t, DefaultMaxRecordSize, s.Get(t.Context()).MaxRecordSize)
	}
	assert.Equal(t, int32(1), f.calls.Load(), "a denial is not asked again at each put")
	c.advance(time.Minute)
	s.Get(t.Context())
	assert.Equal(t, int32(2), f.calls.Load())
	assert.Equal(t, 1, logs.Count("kinesis:DescribeStreamSummary denied"), logs.String())

	f.set(types.RecordDistributionStrategyAuto, nil) // the permission was granted
	c.advance(time.Minute)
	assert.True(t, s.Get(t.Context()).Auto)
}

func TestAFailureKeepsTheLastAnswerAndIsAskedAgainAtTheNextGet(t *testing.T) {
	f := &fakeDescribe{strategy: types.RecordDistributionStrategyAuto}
	s, c, logs := newSource(t, f)
	require.True(t, s.Get(t.Context()).Auto)

	f.set("", &smithy.OperationError{ServiceID: "Kinesis", OperationName: "DescribeStreamSummary", Err: errors.New("connection reset")})
	c.advance(time.Minute)
	assert.True(t, s.Get(t.Context()).Auto, "the last answer stands")
	assert.True(t, s.Get(t.Context()).Auto)
	assert.Equal(t, int32(3), f.calls.Load(), "each Get asks until one is answered")
	assert.Empty(t, logs.String(), "a passing failure is not a warning")
}

func TestConcurrentGetsShareOneLookup(t *testing.T) {
	f := &fakeDescribe{strategy: types.RecordDistributionStrategyAuto, hold: make(chan struct{})}
	s, _, _ := newSource(t, f)
	var wg sync.WaitGroup
	results := make([]Info, 8)
	for i := range results {
		wg.Go(func() { results[i] = s.Get(t.Context()) })
	}
	for f.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let the others find the lookup running
	close(f.hold)
	wg.Wait()
	assert.Equal(t, int32(1), f.calls.Load())
	for _, info := range results {
		assert.True(t, info.Auto)
	}
}

func TestAWaiterLeavesWithItsContext(t *testing.T) {
	f := &fakeDescribe{hold: make(chan struct{})}
	s, _, _ := newSource(t, f)
	var hanging sync.WaitGroup
	hanging.Go(func() { s.Get(context.Background()) }) // the lookup that hangs
	defer hanging.Wait()
	defer close(f.hold)
	for f.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	assert.Equal(t, DefaultMaxRecordSize, s.Get(ctx).MaxRecordSize, "the defaults, once its context ended")
}
