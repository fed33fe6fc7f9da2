// Package backoff holds the waits every retry loop of the binding shares: jittered delays and sleeps
// that end with their context.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Jitter spreads d over [d/2, d] so that replicas and shards backing off together do not retry in step.
func Jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Sleep waits for d or until ctx ends; it reports whether the full wait elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Exponential is a capped, doubling delay: Next returns the current delay, jittered, and doubles it
// up to Max; Reset goes back to Initial.
type Exponential struct {
	Initial, Max time.Duration
	current      time.Duration
}

// Next returns the wait before the next try.
func (e *Exponential) Next() time.Duration {
	if e.current == 0 {
		e.current = e.Initial
	}
	d := Jitter(e.current)
	e.current = min(2*e.current, max(e.Max, e.Initial))
	return d
}

// Reset starts the next failure episode from Initial.
func (e *Exponential) Reset() { e.current = 0 }
