// Package episode logs retried failures as episodes: a loop retrying every second must not write a
// line every second, and an operator must still see a problem only they can end. The shard readers
// and the queue mode's pollers log their failures through it.
package episode

import (
	"sync"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr/kit/logger"
)

// operatorRelog is how often a failure only an operator can end is logged again while it lasts.
const operatorRelog = 5 * time.Minute

// Episode logs a run of failures once, at its start, and its end. A failure only an operator can
// end (a denied permission, a disabled KMS key) is logged again every operatorRelog while it lasts,
// so that it is not lost in the log of a long outage. Its methods are safe for concurrent use, so
// that several loops can share one episode.
type Episode struct {
	log logger.Logger
	// kmsPermission is the permission on the stream's KMS key the failing calls need, named in
	// their errors (awserr.PermissionRead or PermissionWrite).
	kmsPermission string
	now           func() time.Time // tests move time

	mu       sync.Mutex
	failures int
	loggedAt time.Time
}

// New returns an episode logger for calls that need kmsPermission on the stream's key.
func New(log logger.Logger, kmsPermission string) *Episode {
	return &Episode{log: log, kmsPermission: kmsPermission, now: time.Now}
}

// Failed counts a failure of what and logs the first of an episode (and an operator's problem
// again every operatorRelog). An error about the stream's KMS key says which permission is needed.
func (e *Episode) Failed(what string, err error, operatorOnly bool) {
	err = awserr.WithKMSAdvice(err, e.kmsPermission)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failures++
	switch {
	case e.failures == 1 && operatorOnly:
		e.log.Errorf("%s failed, retrying with backoff until it works (an operator must act): %v", what, err)
	case e.failures == 1:
		e.log.Warnf("%s failed, retrying with backoff: %v", what, err)
	case operatorOnly && e.now().Sub(e.loggedAt) >= operatorRelog:
		e.log.Errorf("%s still failing after %d attempts (an operator must act): %v", what, e.failures, err)
	default:
		return
	}
	e.loggedAt = e.now()
}

// Recovered logs the end of an episode, if one was running.
func (e *Episode) Recovered(what string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failures > 0 {
		e.log.Infof("%s works again after %d failed attempts", what, e.failures)
	}
	e.failures = 0
}
