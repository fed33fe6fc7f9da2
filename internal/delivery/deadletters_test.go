package delivery

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/position"
	"github.com/dapr-kinesis/kinesis/internal/testlog"
	"github.com/dapr/kit/logger"
)

// sink keeps what is put to it; refuse, while it returns an error, refuses puts.
type sink struct {
	mu      sync.Mutex
	kept    []DeadLetter
	refused int
	refuse  func() error
}

func (s *sink) Put(_ context.Context, d DeadLetter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse != nil {
		if err := s.refuse(); err != nil {
			s.refused++
			return err
		}
	}
	s.kept = append(s.kept, d)
	return nil
}

func (s *sink) letters() []DeadLetter {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]DeadLetter(nil), s.kept...)
}

func TestARecordFailingMaxAttemptsGoesToTheDeadLetterSinkThenCountsAsDone(t *testing.T) {
	t.Parallel()
	h, _ := failingOn("rec-200")
	dead := &sink{}
	sh := newTestShard(h, logger.NewLogger(t.Name()), Settings{MaxAttempts: 3, DeadLetters: dead}, "")

	cp, complete := drive(sh, t.Context(), t.Context(), records("100", "200", "300"))

	assert.Equal(t, 3, h.count("rec-200"), "maxDeliveryAttempts calls, then the dead-letter put")
	assert.Equal(t, 1, h.count("rec-300"))
	assert.Equal(t, "300", cp)
	assert.True(t, complete)
	letters := dead.letters()
	require.Len(t, letters, 1)
	d := letters[0]
	assert.Equal(t, "rec-200", string(d.Record.Data))
	assert.Equal(t, "pk-200", aws.ToString(d.Record.PartitionKey))
	assert.NotNil(t, d.Record.ApproximateArrivalTimestamp)
	assert.Equal(t, testShard, d.ShardID)
	assert.Equal(t, position.Position{Seq: "200", Sub: -1}, d.Position)
	assert.Equal(t, 3, d.Attempts)
	assert.Equal(t, "app unavailable", d.Reason)
}

// TestARefusedDeadLetterPutHoldsTheWatermarkAndTheKey: while the sink refuses, the record is not
// done: the checkpoint stays before it and, at concurrency 1, nothing after it is delivered; once the
// sink takes it, delivery goes on.
func TestARefusedDeadLetterPutHoldsTheWatermarkAndTheKey(t *testing.T) {
	t.Parallel()
	h, _ := failingOn("rec-200")
	var healed sync.Once
	heal := make(chan struct{})
	dead := &sink{refuse: func() error {
		select {
		case <-heal:
			return nil
		default:
			return errors.New("dead-letter stream unavailable")
		}
	}}
	sh := newTestShard(h, logger.NewLogger(t.Name()), Settings{MaxAttempts: 2, DeadLetters: dead}, "")
	sh.Add(records("100", "200", "300"))

	type step struct {
		checkpoint string
		kept       bool
	}
	var steps []step
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	deadline := time.After(10 * time.Second)
	for !sh.Idle() {
		if due := sh.Dispatch(t.Context(), t.Context()); !due.IsZero() {
			retry.Reset(time.Until(due))
		}
		select {
		case r := <-sh.Finished():
			sh.Complete(t.Context(), r)
		case <-retry.C:
		case <-deadline:
			require.FailNow(t, "not done in time")
		}
		dead.mu.Lock()
		steps = append(steps, step{sh.Checkpoint(), len(dead.kept) > 0})
		if dead.refused >= 5 {
			healed.Do(func() {
				assert.Zero(t, h.count("rec-300"), "nothing after the record while its dead-letter put fails")
				close(heal)
			})
		}
		dead.mu.Unlock()
	}

	for _, s := range steps {
		if !s.kept {
			assert.Contains(t, []string{"", "100"}, s.checkpoint, "never past the record before it is kept")
		}
	}
	require.Len(t, dead.letters(), 1)
	assert.Equal(t, 2, h.count("rec-200"), "the handler is not called again while the put is retried")
	assert.Equal(t, 1, h.count("rec-300"))
	assert.Equal(t, "300", sh.Checkpoint())
}

func TestWithConcurrencyOtherKeysGoOnWhileADeadLetterPutIsRefused(t *testing.T) {
	t.Parallel()
	watch := newOrderWatch(0, func(seq string, _ int) error {
		if seq == "1000" {
			return errors.New("poison")
		}
		return nil
	})
	dead := &sink{refuse: func() error { return errors.New("dead-letter stream unavailable") }}
	sh := NewShard(watch.handle, Settings{RetryInitial: time.Millisecond, RetryMax: 2 * time.Millisecond, Concurrency: 4, MaxAttempts: 1, DeadLetters: dead},
		testShard, "", logger.NewLogger(t.Name()))
	stop, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	recs := keyed(40, func(i int) string { return "key-" + strconv.Itoa(i%7) })
	var watcher sync.WaitGroup
	watcher.Go(func() {
		for stop.Err() == nil {
			dead.mu.Lock()
			refused := dead.refused
			dead.mu.Unlock()
			if refused >= 10 && watch.delivered() == 40-6 {
				cancel()
			}
			time.Sleep(time.Millisecond)
		}
	})
	driveCapped(sh, stop, recs)
	watcher.Wait() // stop has ended, so the watcher has too

	assert.Equal(t, 40-6, watch.delivered(), "every other key's records, and none of key-0's after the poisoned one")
	assert.Empty(t, sh.Checkpoint(), "the watermark stays before the poisoned record")
	assert.Empty(t, dead.letters())
	watch.mu.Lock()
	defer watch.mu.Unlock()
	assert.Empty(t, watch.violations)
}

func TestARecordPastMaxAgeIsNotDelivered(t *testing.T) {
	t.Parallel()
	recs := records("100", "200", "300")
	recs[1].ApproximateArrivalTimestamp = aws.Time(time.Now()) // the others arrived a week before
	for _, withSink := range []bool{true, false} {
		t.Run("dead-letter sink "+strconv.FormatBool(withSink), func(t *testing.T) {
			t.Parallel()
			h := &recorder{}
			log, logs := testlog.New(t)
			s := Settings{MaxAge: time.Hour}
			dead := &sink{}
			if withSink {
				s.DeadLetters = dead
			}
			sh := newTestShard(h, log, s, "")

			cp, complete := drive(sh, t.Context(), t.Context(), recs)

			assert.Equal(t, []string{"rec-200"}, h.data(), "only the record within maxRecordAge reaches the handler")
			assert.Equal(t, "300", cp)
			assert.True(t, complete)
			if !withSink {
				var skipped []string
				for _, line := range strings.Split(logs.String(), "\n") {
					if strings.Contains(line, "Skipping the record: record older than maxRecordAge (1h0m0s)") {
						skipped = append(skipped, line)
						assert.Contains(t, line, "level=warning")
					}
				}
				assert.Len(t, skipped, 2, logs.String())
				assert.Empty(t, dead.letters())
				return
			}
			letters := dead.letters()
			require.Len(t, letters, 2)
			for i, seq := range []string{"100", "300"} {
				assert.Equal(t, seq, letters[i].Position.Seq)
				assert.Zero(t, letters[i].Attempts)
				assert.Contains(t, letters[i].Reason, "record older than maxRecordAge (1h0m0s): arrived 2026-11-26T07:30:00.123Z")
			}
		})
	}
}
