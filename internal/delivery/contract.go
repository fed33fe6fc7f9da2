// Package delivery is the delivery contract both input modes share, whatever reader feeds it:
//   - a shard's records reach the handler one at a time, in sequence order, KPL aggregates one user
//     record at a time;
//   - a record counts as delivered only when the handler returned nil; a failed record is retried,
//     with capped exponential backoff, before any later record, until it succeeds, delivery stops,
//     or (if MaxAttempts > 0) it has failed MaxAttempts times and is skipped, with an error log;
//   - the position it reports, and so the checkpoint, is never past a record still failing;
//   - once stopping, nothing more is delivered: the handler call in flight may finish.
package delivery

import (
	"context"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/backoff"
	"github.com/dapr-kinesis/kinesis/internal/position"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/kit/logger"
)

// Settings are the parts of the contract that come from metadata.
type Settings struct {
	StreamName   string
	RetryInitial time.Duration
	RetryMax     time.Duration
	// MaxAttempts > 0 skips a record after that many failed deliveries; 0 retries it for ever.
	MaxAttempts int
}

// Shard delivers the records of one shard for one tenure of its lease. Its methods are called from
// one goroutine.
type Shard struct {
	handler  bindings.Handler
	settings Settings
	shardID  string
	log      logger.Logger

	// resume, when set, is a checkpoint inside an aggregate: its user records up to resume.Sub were
	// delivered before and are skipped.
	resume    position.Position
	hasResume bool
}

// NewShard starts a tenure that resumes after checkpoint (the lease's: "", a sequence number, or
// "seq:sub").
func NewShard(handler bindings.Handler, s Settings, shardID, checkpoint string, log logger.Logger) *Shard {
	sh := &Shard{
		handler:  handler,
		settings: s,
		shardID:  shardID,
		log:      log.WithFields(map[string]any{MetaShardID: shardID}),
	}
	sh.resume, sh.hasResume = position.Parse(checkpoint)
	sh.settings.RetryMax = max(s.RetryMax, s.RetryInitial)
	return sh
}

// Deliver hands the batch's records to the handler. handlerCtx is given to the handler; stop ending
// means no further call starts and a retry wait ends. It returns the checkpoint of the last record
// completed ("" when none did) and whether every record of the batch was completed.
func (s *Shard) Deliver(stop, handlerCtx context.Context, recs []types.Record) (checkpoint string, complete bool) {
	for i := range recs {
		if recs[i].SequenceNumber == nil {
			continue // never sent by Kinesis; nothing to deliver or checkpoint
		}
		users := userRecords(recs[i])
		if len(users) == 0 {
			// An aggregate of no user records: nothing to deliver, but it is passed.
			checkpoint = aws.ToString(recs[i].SequenceNumber)
			continue
		}
		for j := range users {
			u := &users[j]
			if s.hasResume && s.resume.Seq == u.pos.Seq && u.pos.Sub >= 0 && u.pos.Sub <= s.resume.Sub {
				continue
			}
			if stop.Err() != nil || !s.deliver(stop, handlerCtx, u) {
				return checkpoint, false
			}
			checkpoint = u.pos.Checkpoint(u.of)
		}
		s.hasResume = false // the aggregate to resume in, if any, is the first record read
	}
	return checkpoint, true
}

// deliver hands one record to the handler until it succeeds or is skipped. It returns false when the
// record must be left for a later delivery: stop ended.
func (s *Shard) deliver(stop, handlerCtx context.Context, u *userRecord) bool {
	retry := backoff.Exponential{Initial: s.settings.RetryInitial, Max: s.settings.RetryMax}
	for attempt := 1; ; attempt++ {
		_, err := s.handler(handlerCtx, &bindings.ReadResponse{Data: u.rec.Data, Metadata: s.metadata(u)})
		if err == nil {
			return true
		}
		log := s.log.WithFields(recordFields(u, attempt))
		if stop.Err() != nil {
			log.Debugf("Delivery interrupted by shutdown or a lease change, the record will be delivered again: %v", err)
			return false
		}
		if s.settings.MaxAttempts > 0 && attempt >= s.settings.MaxAttempts {
			log.Errorf("Handler failed %d times, skipping the record: %v", attempt, err)
			return true
		}
		wait := retry.Next()
		log.Warnf("Handler failed, delivering the record again in %v: %v", wait, err)
		if !backoff.Sleep(stop, wait) {
			log.Debugf("Retry interrupted by shutdown or a lease change, the record will be delivered again")
			return false
		}
	}
}
