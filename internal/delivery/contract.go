// Package delivery is the delivery contract both input modes share, whatever reader feeds it:
//   - a record counts as delivered only when the handler returned nil; a failed record is retried,
//     with capped exponential backoff, before any later record of its partition key, until it
//     succeeds, delivery stops, or (if MaxAttempts > 0) it has failed MaxAttempts times: then it is
//     put to the dead-letter sink, if there is one, and counts as done only once that put succeeded
//     (retried with the same backoff until then); without a sink it is skipped, with an error log;
//   - a record older than MaxAge when it comes up for a handler call is not delivered: it goes to
//     the dead-letter sink, or without one is skipped with a warning;
//   - with Concurrency 1 a shard's records reach the handler one at a time, in sequence order (KPL
//     aggregates one user record at a time), and a failing record holds back every later one;
//   - with Concurrency n > 1 up to n handler calls of the shard run at once: records of one partition
//     key (a KPL user record's own key) one at a time and in sequence order, records of different
//     keys concurrently; a failing record holds back only the later records of its key;
//   - the checkpoint is the watermark: the position of the last record before the oldest one not yet
//     done, never past a record in flight or failing;
//   - records read but not yet done are capped (count and bytes): past the cap the engine reads no
//     more until the watermark moves, so a record failing for ever bounds memory;
//   - once stopping, no call starts: the calls in flight may finish.
package delivery

import (
	"context"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/backoff"
	"github.com/dapr-kinesis/kinesis/internal/position"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/kit/logger"
)

// The pending cap's defaults. 10,000 records is one full GetRecords answer (AWS's maximum), so reading
// stays one batch ahead of delivery at any handler speed; with a record failing for ever it is also
// the most that a crash delivers again after it. 8 MiB of records not yet done is four seconds of a
// shard's read limit (2 MiB/s): enough to keep 1,000 calls busy, small enough for a replica holding
// 64 shards.
const (
	DefaultMaxPending      = 10000
	DefaultMaxPendingBytes = 8 << 20
)

// Settings are the parts of the contract that come from metadata.
type Settings struct {
	StreamName   string
	RetryInitial time.Duration
	RetryMax     time.Duration
	// MaxAttempts > 0 gives a record up after that many failed deliveries; 0 retries it for ever.
	MaxAttempts int
	// MaxAge > 0 gives up a record older than that (by its arrival time) when it comes up for delivery.
	MaxAge time.Duration
	// DeadLetters keeps the records given up on; nil skips them.
	DeadLetters DeadLetterSink
	// Concurrency is how many handler calls of the shard may run at once; 0 means 1.
	Concurrency int
	// MaxPending and MaxPendingBytes cap the records read but not yet done (bytes: of records not yet
	// delivered); 0 means the defaults.
	MaxPending      int
	MaxPendingBytes int
}

// Shard delivers the records of one shard for one tenure of its lease. Its methods are called from
// the engine's worker goroutine; handler calls run on goroutines of their own and report on
// Finished, whose results the worker passes back to Complete.
type Shard struct {
	handler  bindings.Handler
	settings Settings
	shardID  string
	log      logger.Logger

	// resume, when set, is a checkpoint inside an aggregate: its user records up to resume.Sub were
	// delivered before and are skipped.
	resume    position.Position
	hasResume bool

	window   window
	keys     map[string]*keyQueue
	ready    readyKeys // keys whose next record may start now, oldest first
	waiting  retryKeys // keys whose next record waits for its retry time
	inFlight int
	finished chan Result
}

// Result is the outcome of one handler call, or of one put to the dead-letter sink.
type Result struct {
	e   *entry
	err error
	// deadLettered is set when the call was a put of e to the dead-letter sink.
	deadLettered bool
}

// NewShard starts a tenure that resumes after checkpoint (the lease's: "", a sequence number, or
// "seq:sub").
func NewShard(handler bindings.Handler, s Settings, shardID, checkpoint string, log logger.Logger) *Shard {
	s.Concurrency = max(s.Concurrency, 1)
	if s.MaxPending <= 0 {
		s.MaxPending = DefaultMaxPending
	}
	if s.MaxPendingBytes <= 0 {
		s.MaxPendingBytes = DefaultMaxPendingBytes
	}
	s.RetryMax = max(s.RetryMax, s.RetryInitial)
	sh := &Shard{
		handler:  handler,
		settings: s,
		shardID:  shardID,
		log:      log.WithFields(map[string]any{MetaShardID: shardID}),
		keys:     map[string]*keyQueue{},
		waiting:  retryKeys{h: keyHeap{byDue: true}},
		// One slot per call that may be in flight: a call's goroutine never waits to report.
		finished: make(chan Result, s.Concurrency),
	}
	sh.resume, sh.hasResume = position.Parse(checkpoint)
	return sh
}

// Add queues a batch's records for delivery, in sequence order after those queued before.
func (s *Shard) Add(recs []types.Record) {
	for i := range recs {
		if recs[i].SequenceNumber == nil {
			continue // never sent by Kinesis; nothing to deliver or checkpoint
		}
		users := userRecords(recs[i])
		if len(users) == 0 {
			// An aggregate of no user records: nothing to deliver, but it is passed.
			s.window.push(&entry{userRecord: userRecord{pos: position.Position{Seq: *recs[i].SequenceNumber, Sub: -1}, of: 1}, done: true})
			continue
		}
		for j := range users {
			u := users[j]
			if s.hasResume && s.resume.Seq == u.pos.Seq && u.pos.Sub >= 0 && u.pos.Sub <= s.resume.Sub {
				continue
			}
			e := &entry{
				userRecord: u,
				size:       len(u.rec.Data) + len(aws.ToString(u.rec.PartitionKey)),
				retry:      backoff.Exponential{Initial: s.settings.RetryInitial, Max: s.settings.RetryMax},
			}
			s.window.push(e)
			s.queue(e)
		}
		s.hasResume = false // the aggregate to resume in, if any, is the first record read
	}
	s.window.advance()
}

// queue appends e to its key's queue; a key that was idle becomes ready.
func (s *Shard) queue(e *entry) {
	name := ""
	if s.settings.Concurrency > 1 {
		name = laneOf(e)
	}
	k, ok := s.keys[name]
	if !ok {
		k = &keyQueue{name: name}
		s.keys[name] = k
	}
	e.key = k
	k.records = append(k.records, e)
	if len(k.records) == 1 {
		s.ready.push(k)
	}
}

// laneOf is the key whose records e must follow: its partition key or, for a record written without
// one (a stream that places records itself, RecordDistributionStrategy AUTO, promises no order
// among those), a lane of its own. The NUL byte keeps those lanes apart from every real key, which
// Kinesis requires to be printable.
func laneOf(e *entry) string {
	if e.rec.PartitionKey == nil {
		return "\x00" + e.pos.Seq + "/" + strconv.Itoa(e.pos.Sub)
	}
	return *e.rec.PartitionKey
}

// Full reports whether the records read but not yet done reached the cap: read no more until the
// watermark moves.
func (s *Shard) Full() bool {
	return s.window.len() >= s.settings.MaxPending || s.window.bytes >= s.settings.MaxPendingBytes
}

// Idle reports whether every record added is done.
func (s *Shard) Idle() bool { return s.window.len() == 0 }

// InFlight is how many handler calls are running.
func (s *Shard) InFlight() int { return s.inFlight }

// Checkpoint is the watermark: the lease-table position up to which every record of this tenure is
// done ("" while none is).
func (s *Shard) Checkpoint() string { return s.window.checkpoint }

// Finished delivers the result of every handler call Dispatch started.
func (s *Shard) Finished() <-chan Result { return s.finished }

// Dispatch starts handler calls for the oldest ready records, as many as Concurrency allows, unless
// stop has ended. It returns when the next record waiting to be retried comes due (zero if none).
func (s *Shard) Dispatch(stop, handlerCtx context.Context) time.Time {
	if stop.Err() != nil {
		return time.Time{}
	}
	now := time.Now()
	for k := s.waiting.peek(); k != nil && !k.records[0].due.After(now); k = s.waiting.peek() {
		s.ready.push(s.waiting.pop())
	}
	for s.inFlight < s.settings.Concurrency && s.ready.len() > 0 {
		e := s.ready.pop().records[0]
		if e.dead == nil {
			if reason := s.tooOld(e, now); reason != "" {
				if s.settings.DeadLetters == nil {
					s.log.WithFields(recordFields(&e.userRecord, e.attempts)).Warnf("Skipping the record: %s", reason)
					s.finish(e)
					continue
				}
				e.dead = s.deadLetter(e, reason)
			}
		}
		s.start(handlerCtx, e)
	}
	if k := s.waiting.peek(); k != nil {
		return k.records[0].due
	}
	return time.Time{}
}

// start runs e's handler call, or its put to the dead-letter sink once it was given up on.
func (s *Shard) start(handlerCtx context.Context, e *entry) {
	s.inFlight++
	if dead := e.dead; dead != nil {
		sink := s.settings.DeadLetters
		go func() {
			err := sink.Put(handlerCtx, *dead)
			s.finished <- Result{e: e, err: err, deadLettered: true}
		}()
		return
	}
	e.attempts++
	resp := &bindings.ReadResponse{Data: e.rec.Data, Metadata: s.metadata(&e.userRecord)}
	go func() {
		_, err := s.handler(handlerCtx, resp)
		s.finished <- Result{e: e, err: err}
	}()
}

// Complete takes the result of a handler call or dead-letter put: a success, or a record skipped
// after MaxAttempts without a dead-letter sink, is done and lets its key's next record start; a
// record that failed MaxAttempts times goes to the dead-letter sink next; another failure waits for
// its retry, unless stop has ended: then the record is left for the shard's next reader.
func (s *Shard) Complete(stop context.Context, r Result) {
	s.inFlight--
	e := r.e
	if r.err == nil && !r.deadLettered {
		s.finish(e)
		return
	}
	log := s.log.WithFields(recordFields(&e.userRecord, e.attempts))
	switch {
	case r.err == nil: // the dead-letter put succeeded
		log.Warnf("Record put on the dead-letter stream after %d deliveries: %s", e.attempts, e.dead.Reason)
	case stop.Err() != nil:
		log.Debugf("Delivery interrupted by shutdown or a lease change, the record will be delivered again: %v", r.err)
		return
	case r.deadLettered:
		wait := s.retryLater(e)
		log.Warnf("Dead-letter put failed, trying again in %v; the checkpoint stays before the record: %v", wait, r.err)
		return
	case s.settings.MaxAttempts > 0 && e.attempts >= s.settings.MaxAttempts:
		if s.settings.DeadLetters != nil {
			e.dead = s.deadLetter(e, r.err.Error())
			s.ready.push(e.key)
			return
		}
		log.Errorf("Handler failed %d times, skipping the record: %v", e.attempts, r.err)
	default:
		wait := s.retryLater(e)
		log.Warnf("Handler failed, delivering the record again in %v: %v", wait, r.err)
		return
	}
	s.finish(e)
}

// retryLater puts e's key in the retry heap after e's next backoff and returns that backoff.
func (s *Shard) retryLater(e *entry) time.Duration {
	wait := e.retry.Next()
	e.due = time.Now().Add(wait)
	s.waiting.push(e.key)
	return wait
}

// finish marks e done and lets its key's next record start.
func (s *Shard) finish(e *entry) {
	s.window.done(e)
	k := e.key
	k.records[0] = nil
	k.records = k.records[1:]
	if len(k.records) > 0 {
		s.ready.push(k)
	} else {
		delete(s.keys, k.name)
	}
	s.window.advance()
}
