package shardread

import (
	"github.com/dapr/kit/logger"
)

// episode logs a run of failures once, at its start, and its end: a reader retrying every second
// must not write a line every second.
type episode struct {
	log      logger.Logger
	failures int
}

// failed counts a failure and logs the first of an episode.
func (e *episode) failed(what string, err error, operatorOnly bool) {
	e.failures++
	if e.failures > 1 {
		return
	}
	if operatorOnly {
		e.log.Errorf("%s failed, retrying with backoff until it works (an operator must act): %v", what, err)
		return
	}
	e.log.Warnf("%s failed, retrying with backoff: %v", what, err)
}

// recovered logs the end of an episode, if one was running.
func (e *episode) recovered(what string) {
	if e.failures > 0 {
		e.log.Infof("%s works again after %d failed attempts", what, e.failures)
	}
	e.failures = 0
}
