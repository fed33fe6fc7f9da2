package shardread

import (
	"time"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr/kit/logger"
)

// operatorRelog is how often a failure only an operator can end is logged again while it lasts.
const operatorRelog = 5 * time.Minute

// episode logs a run of failures once, at its start, and its end: a reader retrying every second
// must not write a line every second. A failure only an operator can end (a denied permission, a
// disabled KMS key) is logged again every operatorRelog while it lasts, so that it is not lost in
// the log of a long outage.
type episode struct {
	log      logger.Logger
	failures int
	loggedAt time.Time
	now      func() time.Time // nil: time.Now; tests move time
}

// failed counts a failure and logs the first of an episode. An error about the stream's KMS key
// says which permission reading needs.
func (e *episode) failed(what string, err error, operatorOnly bool) {
	e.failures++
	err = awserr.WithKMSAdvice(err, awserr.PermissionRead)
	now := time.Now
	if e.now != nil {
		now = e.now
	}
	switch {
	case e.failures == 1 && operatorOnly:
		e.log.Errorf("%s failed, retrying with backoff until it works (an operator must act): %v", what, err)
	case e.failures == 1:
		e.log.Warnf("%s failed, retrying with backoff: %v", what, err)
	case operatorOnly && now().Sub(e.loggedAt) >= operatorRelog:
		e.log.Errorf("%s still failing after %d attempts (an operator must act): %v", what, e.failures, err)
	default:
		return
	}
	e.loggedAt = now()
}

// recovered logs the end of an episode, if one was running.
func (e *episode) recovered(what string) {
	if e.failures > 0 {
		e.log.Infof("%s works again after %d failed attempts", what, e.failures)
	}
	e.failures = 0
}
