package engine

import (
	"time"

	"github.com/dapr/kit/logger"
)

// lagWatch tells the operator when a shard falls behind: one warning when its lag (MillisBehindLatest
// of the reads) passes the threshold, one info line when it is back within half of it. Half, so that
// a lag hovering around the threshold does not write a line per batch.
type lagWatch struct {
	threshold time.Duration // 0: no lag lines
	log       logger.Logger
	behind    bool
}

func (l *lagWatch) observe(millisBehindLatest int64) {
	if l.threshold <= 0 {
		return
	}
	lag := time.Duration(millisBehindLatest) * time.Millisecond
	switch {
	case !l.behind && lag > l.threshold:
		l.behind = true
		l.log.WithFields(map[string]any{"millisBehindLatest": millisBehindLatest}).
			Warnf("The shard is %v behind its latest record, more than lagWarningThreshold (%v): the consumer does not keep up; raise concurrencyPerShard, add replicas or shards, or speed up the handler", lag, l.threshold)
	case l.behind && lag <= l.threshold/2:
		l.behind = false
		l.log.WithFields(map[string]any{"millisBehindLatest": millisBehindLatest}).
			Infof("The shard has caught up: %v behind its latest record", lag)
	}
}
