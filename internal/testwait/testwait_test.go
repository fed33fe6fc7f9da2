package testwait

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recordingTB is a test whose failures are recorded instead of reported; Fatalf ends the goroutine
// it was called on, as testing.T's does.
type recordingTB struct {
	testing.TB
	failures []string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Error(args ...any) { r.failures = append(r.failures, fmt.Sprint(args...)) }

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
	runtime.Goexit()
}

// asTest runs fn as a test body would run: on a goroutine of its own that Fatalf may end.
func asTest(t *testing.T, fn func(tb *recordingTB)) *recordingTB {
	t.Helper()
	tb := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(tb)
	}()
	<-done
	return tb
}

func TestEventuallyReturnsOnlyAfterTheCheckInFlightAtTheDeadline(t *testing.T) {
	var running, checks atomic.Int32
	tb := asTest(t, func(tb *recordingTB) {
		Eventually(tb, func() bool {
			running.Add(1)
			defer running.Add(-1)
			checks.Add(1)
			time.Sleep(150 * time.Millisecond) // outlasts the deadline
			return false
		}, 100*time.Millisecond, 10*time.Millisecond, "the %s", "message")
	})
	assert.Zero(t, running.Load(), "no check runs once Eventually has returned")
	require.Len(t, tb.failures, 1)
	assert.Contains(t, tb.failures[0], "condition never satisfied within 100ms: the message")
	assert.Equal(t, int32(1), checks.Load(), "a check past the deadline is the last")
}

func TestEventuallyPassesAtTheFirstCheckThatHolds(t *testing.T) {
	var checks int
	tb := asTest(t, func(tb *recordingTB) {
		Eventually(tb, func() bool { checks++; return checks == 3 }, 5*time.Second, time.Millisecond)
	})
	assert.Empty(t, tb.failures)
	assert.Equal(t, 3, checks)
}

func TestNeverFailsAsSoonAsTheConditionHolds(t *testing.T) {
	var checks int
	began := time.Now()
	tb := asTest(t, func(tb *recordingTB) {
		Never(tb, func() bool { checks++; return checks == 2 }, 10*time.Second, time.Millisecond, "the split holds")
	})
	require.Len(t, tb.failures, 1)
	assert.Contains(t, tb.failures[0], "condition satisfied within 10s: the split holds")
	assert.Equal(t, 2, checks)
	assert.Less(t, time.Since(began), 5*time.Second, "without waiting out its time")
}

func TestNeverChecksUntilItsTimeIsUpAndNoLonger(t *testing.T) {
	var running, checks atomic.Int32
	tb := asTest(t, func(tb *recordingTB) {
		Never(tb, func() bool {
			running.Add(1)
			defer running.Add(-1)
			checks.Add(1)
			time.Sleep(20 * time.Millisecond)
			return false
		}, 200*time.Millisecond, 10*time.Millisecond)
	})
	assert.Empty(t, tb.failures)
	assert.Zero(t, running.Load(), "no check runs once Never has returned")
	assert.GreaterOrEqual(t, checks.Load(), int32(2), "checked more than once")
}

func TestEventuallyWithTReportsTheLastChecksFailures(t *testing.T) {
	var checks int
	tb := asTest(t, func(tb *recordingTB) {
		EventuallyWithT(tb, func(c *Collect) {
			checks++
			require.NoError(c, errors.New("table not there yet"), "check %d", checks)
			assert.Fail(c, "never reached: require ended the check")
		}, 50*time.Millisecond, 10*time.Millisecond)
	})
	require.Len(t, tb.failures, 2, "the last check's failure, then the timeout")
	assert.Contains(t, tb.failures[0], fmt.Sprintf("check %d", checks))
	assert.NotContains(t, tb.failures[0], "never reached")
	assert.Contains(t, tb.failures[1], "condition never satisfied within 50ms")
}

func TestEventuallyWithTPassesOnceACheckHasNoFailure(t *testing.T) {
	var checks int
	tb := asTest(t, func(tb *recordingTB) {
		EventuallyWithT(tb, func(c *Collect) {
			checks++
			assert.GreaterOrEqual(c, checks, 3)
		}, 5*time.Second, time.Millisecond)
	})
	assert.Empty(t, tb.failures)
	assert.Equal(t, 3, checks)
}

func TestEventuallyWithTLetsOtherPanicsThrough(t *testing.T) {
	assert.PanicsWithValue(t, "bug in the check", func() {
		EventuallyWithT(t, func(*Collect) { panic("bug in the check") }, time.Second, time.Millisecond)
	})
}
