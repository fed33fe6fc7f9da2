// Package testwait polls a test's condition in the test's own goroutine.
//
// testify's Eventually, Never and EventuallyWithT run each check in a goroutine of their own and
// return at their deadline without waiting for the check in flight. A check that then reads a table
// or a server the test's cleanup has removed, or calls require, fails after its test has ended: a
// failure in the wrong test, or a panic of the whole test binary. Here every check has returned
// before Eventually or Never does, so a check may use require and anything the test owns.
package testwait

import (
	"fmt"
	"testing"
	"time"
)

// Eventually checks condition every tick until it holds, and fails the test now if it has not
// held by waitFor. A check that is running at the deadline is waited for, and counts.
func Eventually(tb testing.TB, condition func() bool, waitFor, tick time.Duration, msgAndArgs ...any) {
	tb.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		if condition() {
			return
		}
		if !sleepUntilNextCheck(deadline, tick) {
			tb.Fatalf("condition never satisfied within %v%s", waitFor, message(msgAndArgs))
		}
	}
}

// Never checks condition every tick for waitFor and fails the test now if it ever holds.
func Never(tb testing.TB, condition func() bool, waitFor, tick time.Duration, msgAndArgs ...any) {
	tb.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		if condition() {
			tb.Fatalf("condition satisfied within %v%s", waitFor, message(msgAndArgs))
		}
		if !sleepUntilNextCheck(deadline, tick) {
			return
		}
	}
}

// EventuallyWithT runs check every tick until it reports no failure, and fails the test now with
// the last check's failures if it has not passed by waitFor. check reports through c with assert
// and require, as with testify's EventuallyWithT; a require failure ends only that check.
func EventuallyWithT(tb testing.TB, check func(c *Collect), waitFor, tick time.Duration, msgAndArgs ...any) {
	tb.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		c := &Collect{}
		c.run(check)
		if len(c.errors) == 0 {
			return
		}
		if !sleepUntilNextCheck(deadline, tick) {
			for _, e := range c.errors {
				tb.Error(e)
			}
			tb.Fatalf("condition never satisfied within %v%s", waitFor, message(msgAndArgs))
		}
	}
}

// Collect gathers one check's failures; it is the assert.TestingT and require.TestingT a check of
// EventuallyWithT reports to.
type Collect struct {
	errors []string
}

// Errorf records a failure of this check.
func (c *Collect) Errorf(format string, args ...any) {
	c.errors = append(c.errors, fmt.Sprintf(format, args...))
}

// FailNow ends this check (not the test): require's failures stop the check where they happen.
func (c *Collect) FailNow() {
	if len(c.errors) == 0 {
		c.errors = append(c.errors, "FailNow called")
	}
	panic(checkEnded{})
}

// Helper lets assert and require report the check's caller.
func (*Collect) Helper() {}

type checkEnded struct{}

func (c *Collect) run(check func(c *Collect)) {
	defer func() {
		if r := recover(); r != nil {
			if _, ended := r.(checkEnded); !ended {
				panic(r)
			}
		}
	}()
	check(c)
}

// sleepUntilNextCheck waits a tick, or less if the deadline comes first, and reports whether
// another check is due: the last one runs at the deadline.
func sleepUntilNextCheck(deadline time.Time, tick time.Duration) bool {
	left := time.Until(deadline)
	if left <= 0 {
		return false
	}
	time.Sleep(min(tick, left))
	return true
}

func message(msgAndArgs []any) string {
	switch {
	case len(msgAndArgs) == 0:
		return ""
	case len(msgAndArgs) == 1:
		return ": " + fmt.Sprint(msgAndArgs[0])
	default:
		if format, ok := msgAndArgs[0].(string); ok {
			return ": " + fmt.Sprintf(format, msgAndArgs[1:]...)
		}
		return ": " + fmt.Sprint(msgAndArgs...)
	}
}
