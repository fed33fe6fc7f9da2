package shardread

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/testlog"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
)

// These tests fake the Kinesis API (the SDK boundary) for what the emulators cannot be made to do
// on demand: throttle, expire an iterator, answer every read with a full batch. The readers' paths
// the emulators do reach are tested at the root package against them.

// fakeShard is a shard of numbered records behind a fake GetShardIterator/GetRecords. An iterator is
// the index of the next record to read; fail, if set, may answer a GetRecords call instead.
type fakeShard struct {
	mu       sync.Mutex
	records  int
	closed   bool  // a closed shard: reading past its last record ends it
	behind   int64 // MillisBehindLatest reported while records remain
	fail     func(call int) error
	calls    []time.Time
	requests []*kinesis.GetShardIteratorInput
}

func seqOf(i int) string { return fmt.Sprintf("%05d", i) }

func (f *fakeShard) GetShardIterator(_ context.Context, in *kinesis.GetShardIteratorInput, _ ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, in)
	next := 0
	switch in.ShardIteratorType {
	case types.ShardIteratorTypeAfterSequenceNumber:
		fmt.Sscanf(aws.ToString(in.StartingSequenceNumber), "%d", &next)
		next++
	case types.ShardIteratorTypeAtSequenceNumber:
		fmt.Sscanf(aws.ToString(in.StartingSequenceNumber), "%d", &next)
	case types.ShardIteratorTypeLatest:
		next = f.records
	}
	return &kinesis.GetShardIteratorOutput{ShardIterator: aws.String(strconv.Itoa(next))}, nil
}

func (f *fakeShard) GetRecords(_ context.Context, in *kinesis.GetRecordsInput, _ ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, time.Now())
	if f.fail != nil {
		if err := f.fail(len(f.calls)); err != nil {
			return nil, err
		}
	}
	var next int
	fmt.Sscanf(aws.ToString(in.ShardIterator), "%d", &next)
	out := &kinesis.GetRecordsOutput{}
	for next < f.records && len(out.Records) < int(aws.ToInt32(in.Limit)) {
		out.Records = append(out.Records, types.Record{SequenceNumber: aws.String(seqOf(next)), PartitionKey: aws.String("k"), Data: []byte{byte(next)}})
		next++
	}
	if next < f.records {
		out.MillisBehindLatest = aws.Int64(f.behind)
	} else {
		out.MillisBehindLatest = aws.Int64(0)
	}
	if !f.closed || next < f.records {
		out.NextShardIterator = aws.String(strconv.Itoa(next))
	}
	return out, nil
}

func (f *fakeShard) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls...)
}

func (f *fakeShard) iteratorRequests() []*kinesis.GetShardIteratorInput {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*kinesis.GetShardIteratorInput(nil), f.requests...)
}

// run starts a polling reader on shard and returns its batches and its result.
func run(t *testing.T, ctx context.Context, shard *fakeShard, cfg PollingConfig) (<-chan Batch, <-chan error) {
	t.Helper()
	cfg.Client, cfg.StreamName, cfg.ShardID = shard, "s", "shardId-000000000000"
	if cfg.Log == nil {
		cfg.Log, _ = testlog.New(t)
	}
	if cfg.Start == (Start{}) {
		cfg.Start.FromTrimHorizon = true
	}
	if cfg.MaxRecords == 0 {
		cfg.MaxRecords = 10
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Second
	}
	batches, done := make(chan Batch), make(chan error, 1)
	go func() { done <- NewPolling(cfg).Run(ctx, batches) }()
	return batches, done
}

// read collects batches until n records arrived.
func read(t *testing.T, batches <-chan Batch, n int) []types.Record {
	t.Helper()
	var got []types.Record
	timeout := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case b := <-batches:
			got = append(got, b.Records...)
		case <-timeout:
			t.Fatalf("read %d of %d records", len(got), n)
		}
	}
	return got
}

func stop(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrStopped)
	case <-time.After(10 * time.Second):
		t.Fatal("the reader did not stop after its context ended")
	}
}

func TestPollingKeepsToFiveCallsPerSecondWhileBehind(t *testing.T) {
	// Every read returns a full batch with the shard behind: the reader reads again at once, but
	// never two GetRecords calls closer than 200 ms (AWS throttles a shard past 5 a second).
	shard := &fakeShard{records: 100, behind: 60_000}
	ctx, cancel := context.WithCancel(t.Context())
	batches, done := run(t, ctx, shard, PollingConfig{MaxRecords: 10, PollInterval: time.Minute})
	got := read(t, batches, 60)
	stop(t, cancel, done)

	for i, r := range got {
		require.Equal(t, seqOf(i), aws.ToString(r.SequenceNumber), "records in order, none skipped")
	}
	calls := shard.callTimes()
	require.GreaterOrEqual(t, len(calls), 6)
	for i := 1; i < len(calls); i++ {
		assert.GreaterOrEqual(t, calls[i].Sub(calls[i-1]), 199*time.Millisecond, "calls %d and %d", i-1, i+1)
	}
	// Behind, the reader does not wait its minute-long poll interval between reads.
	assert.Less(t, calls[5].Sub(calls[0]), 30*time.Second)
}

func TestPollingRenewsAnExpiredIteratorAfterTheLastRecordRead(t *testing.T) {
	shard := &fakeShard{records: 30, behind: 1000}
	shard.fail = func(call int) error {
		if call == 2 {
			return &types.ExpiredIteratorException{Message: aws.String("Iterator expired")}
		}
		return nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	batches, done := run(t, ctx, shard, PollingConfig{MaxRecords: 10, Start: Start{Checkpoint: seqOf(4)}})
	got := read(t, batches, 25)
	stop(t, cancel, done)

	for i, r := range got {
		require.Equal(t, seqOf(i+5), aws.ToString(r.SequenceNumber), "after the checkpoint, each record once")
	}
	reqs := shard.iteratorRequests()
	require.Len(t, reqs, 2, "one iterator at the start, one after it expired")
	assert.Equal(t, types.ShardIteratorTypeAfterSequenceNumber, reqs[0].ShardIteratorType)
	assert.Equal(t, seqOf(4), aws.ToString(reqs[0].StartingSequenceNumber), "from the checkpoint")
	assert.Equal(t, types.ShardIteratorTypeAfterSequenceNumber, reqs[1].ShardIteratorType)
	assert.Equal(t, seqOf(14), aws.ToString(reqs[1].StartingSequenceNumber), "after the last record read, not the checkpoint")
}

func TestPollingThrottlingIsOneEpisodeInTheLog(t *testing.T) {
	shard := &fakeShard{records: 5}
	shard.fail = func(call int) error {
		if call <= 4 {
			return &types.ProvisionedThroughputExceededException{Message: aws.String("Rate exceeded for shard")}
		}
		return nil
	}
	log, logs := testlog.New(t)
	ctx, cancel := context.WithCancel(t.Context())
	batches, done := run(t, ctx, shard, PollingConfig{Log: log})
	got := read(t, batches, 5)
	stop(t, cancel, done)

	assert.Len(t, got, 5, "every record once throttling ended")
	assert.Equal(t, 1, logs.Count("GetRecords failed, retrying with backoff"), logs.String())
	assert.Equal(t, 1, logs.Count("works again after 4 failed attempts"), logs.String())
	assert.Equal(t, 0, logs.Count("level=error"), "throttling is not an operator's problem")
	assert.Equal(t, logs.Count("level="), logs.Count("shardId=shardId-000000000000"), "every line names the shard")
	calls := shard.callTimes()
	require.Len(t, calls, 5)
	// Backoff grows: the fourth retry waits longer than the first.
	assert.Greater(t, calls[4].Sub(calls[3]), calls[1].Sub(calls[0]))
}

func TestPollingAccessDeniedIsAnOperatorError(t *testing.T) {
	shard := &fakeShard{records: 1}
	shard.fail = func(call int) error {
		if call <= 2 {
			return &types.AccessDeniedException{Message: aws.String("not authorized to perform: kinesis:GetRecords")}
		}
		return nil
	}
	log, logs := testlog.New(t)
	ctx, cancel := context.WithCancel(t.Context())
	batches, done := run(t, ctx, shard, PollingConfig{Log: log})
	read(t, batches, 1)
	stop(t, cancel, done)
	assert.Equal(t, 1, logs.Count("level=error"), logs.String())
	assert.Contains(t, logs.String(), "an operator must act")
}

// TestPollingKMSKeyProblemSaysWhatToFixAndResumesByItself: a stream whose KMS key the reader may
// not use (a missing kms:Decrypt) stops the shard's reading with one error that names the
// permission, retried with backoff, never in a hot loop, until the key works again.
func TestPollingKMSKeyProblemSaysWhatToFixAndResumesByItself(t *testing.T) {
	shard := &fakeShard{records: 3}
	shard.fail = func(call int) error {
		if call <= 4 {
			return &types.KMSAccessDeniedException{Message: aws.String("User is not authorized to perform: kms:Decrypt")}
		}
		return nil
	}
	log, logs := testlog.New(t)
	ctx, cancel := context.WithCancel(t.Context())
	batches, done := run(t, ctx, shard, PollingConfig{Log: log})
	got := read(t, batches, 3)
	stop(t, cancel, done)

	assert.Len(t, got, 3, "every record once the key works again")
	require.Equal(t, 1, logs.Count("level=error"), logs.String())
	assert.Equal(t, 1, logs.Count("access to the stream's KMS key is denied; the binding's credentials need kms:Decrypt on an enabled key"), logs.String())
	assert.Equal(t, 1, logs.Count("works again after 4 failed attempts"), logs.String())
	calls := shard.callTimes()
	require.Len(t, calls, 5)
	assert.Greater(t, calls[4].Sub(calls[0]), time.Second, "four failures backed off: 0.2 + 0.4 + 0.8 s at least, with jitter")
}

func TestPollingShardEndEndsTheRun(t *testing.T) {
	shard := &fakeShard{records: 12, closed: true}
	batches, done := run(t, t.Context(), shard, PollingConfig{MaxRecords: 10, Start: Start{FromTrimHorizon: true}})
	var got []types.Record
	var last Batch
	for b := range batchesUntilEnd(t, batches) {
		got = append(got, b.Records...)
		last = b
	}
	assert.True(t, last.End)
	assert.Len(t, got, 12)
	select {
	case err := <-done:
		require.NoError(t, err, "a shard read to its end is a normal stop")
	case <-time.After(10 * time.Second):
		t.Fatal("the reader did not stop at the shard's end")
	}
	assert.Equal(t, types.ShardIteratorTypeTrimHorizon, shard.iteratorRequests()[0].ShardIteratorType)
}

func batchesUntilEnd(t *testing.T, batches <-chan Batch) <-chan Batch {
	t.Helper()
	out := make(chan Batch)
	go func() {
		defer close(out)
		for {
			select {
			case b := <-batches:
				out <- b
				if b.End {
					return
				}
			case <-time.After(20 * time.Second):
				t.Error("no batch with End")
				return
			}
		}
	}()
	return out
}

func TestPollingStopsPromptlyWhileWaiting(t *testing.T) {
	for name, shard := range map[string]*fakeShard{
		"caught up, in its poll interval": {records: 0},
		"backing off from failures":       {fail: func(int) error { return errors.New("connection reset") }},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			_, done := run(t, ctx, shard, PollingConfig{PollInterval: time.Hour})
			testwait.Eventually(t, func() bool { return len(shard.callTimes()) >= 1 }, 10*time.Second, 10*time.Millisecond)
			// A reader told to stop while it waits returns at once, not after its wait.
			stop(t, cancel, done)
		})
	}
}

func TestPollingHeartbeatWhenCaughtUp(t *testing.T) {
	// An idle shard still sends (empty) batches, so that its lag and liveness are seen.
	shard := &fakeShard{}
	ctx, cancel := context.WithCancel(t.Context())
	batches, done := run(t, ctx, shard, PollingConfig{PollInterval: 300 * time.Millisecond})
	select {
	case b := <-batches:
		assert.Empty(t, b.Records)
		assert.False(t, b.End)
	case <-time.After(20 * time.Second):
		t.Fatal("no batch from an idle shard")
	}
	stop(t, cancel, done)
}

func TestStartFrom(t *testing.T) {
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name     string
		start    Start
		lastRead string
		typ      types.ShardIteratorType
		seq      string
		atTime   bool
	}{
		{"nothing: LATEST", Start{}, "", types.ShardIteratorTypeLatest, "", false},
		{"initial position", Start{Initial: types.ShardIteratorTypeTrimHorizon}, "", types.ShardIteratorTypeTrimHorizon, "", false},
		{"at a timestamp", Start{Initial: types.ShardIteratorTypeAtTimestamp, Timestamp: at}, "", types.ShardIteratorTypeAtTimestamp, "", true},
		{"child of a read parent", Start{FromTrimHorizon: true, Initial: types.ShardIteratorTypeLatest}, "", types.ShardIteratorTypeTrimHorizon, "", false},
		{"checkpoint", Start{Checkpoint: "495", FromTrimHorizon: true}, "", types.ShardIteratorTypeAfterSequenceNumber, "495", false},
		{"checkpoint inside an aggregate", Start{Checkpoint: "495:3"}, "", types.ShardIteratorTypeAtSequenceNumber, "495", false},
		{"read in this tenure", Start{Checkpoint: "495:3"}, "497", types.ShardIteratorTypeAfterSequenceNumber, "497", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			typ, seq, atTime := c.start.from(c.lastRead)
			assert.Equal(t, c.typ, typ)
			assert.Equal(t, c.seq, seq)
			assert.Equal(t, c.atTime, atTime)
		})
	}
}
