package localaws

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"time"
)

// This file keeps what a QueueServer knows of one queue's records, apart from HTTP and locking
// (the server's mutex guards it all).
//
// A record the queue holds is in one of two lanes: the main lane, which ReceiveQueueRecords reads,
// or the dead-letter lane, which only the DeadLetter operations see. In its lane it is either
// visible (ready to be received) or in flight (received, with a receipt handle, until a deadline).
// Acknowledged records are dropped: the stream reader never reads a record twice, so nothing can
// bring them back.

// queueRecord is one stream record as a queue holds it.
type queueRecord struct {
	id       string // from (shard, sequence number): the same in every queue on the stream
	data     []byte
	key      *string // nil for a record read without a partition key (AUTO streams)
	arrival  time.Time
	receives int32     // unacknowledged receives; Restore resets it
	first    time.Time // first receive; zero until then

	lane     *lane
	slot     int  // index in lane.visible, or in lane.flight while in flight
	inFlight bool // received, not yet acknowledged, visibility timeout not ended
	deadline time.Time
	handle   string // the receipt handle of the current delivery, while in flight
}

// lane is one set of records: the visible ones in no order (receives pick at random, as the
// queue promises no order) and the ones in flight by deadline.
type lane struct {
	visible []*queueRecord
	flight  flightHeap
}

func (l *lane) push(r *queueRecord) {
	r.lane, r.inFlight, r.handle, r.slot = l, false, "", len(l.visible)
	l.visible = append(l.visible, r)
}

func (l *lane) remove(r *queueRecord) {
	if r.inFlight {
		heap.Remove(&l.flight, r.slot)
		r.inFlight = false
		return
	}
	last := len(l.visible) - 1
	l.visible[r.slot] = l.visible[last]
	l.visible[r.slot].slot = r.slot
	l.visible[last] = nil
	l.visible = l.visible[:last]
}

// pick removes a random visible record.
func (l *lane) pick() *queueRecord {
	r := l.visible[rand.IntN(len(l.visible))]
	l.remove(r)
	return r
}

func (l *lane) fly(r *queueRecord, deadline time.Time, handle string) {
	r.inFlight, r.deadline, r.handle = true, deadline, handle
	heap.Push(&l.flight, r)
}

// expired removes and returns a record whose visibility timeout has ended, or nil.
func (l *lane) expired(now time.Time) *queueRecord {
	if len(l.flight) == 0 || l.flight[0].deadline.After(now) {
		return nil
	}
	r := heap.Pop(&l.flight).(*queueRecord)
	r.inFlight = false
	return r
}

func (l *lane) size() int { return len(l.visible) + len(l.flight) }

// flightHeap orders in-flight records by deadline, each knowing its index for heap.Fix.
type flightHeap []*queueRecord

func (h *flightHeap) Len() int           { return len(*h) }
func (h *flightHeap) Less(i, j int) bool { return (*h)[i].deadline.Before((*h)[j].deadline) }
func (h *flightHeap) Swap(i, j int) {
	(*h)[i], (*h)[j] = (*h)[j], (*h)[i]
	(*h)[i].slot, (*h)[j].slot = i, j
}

func (h *flightHeap) Push(x any) {
	r := x.(*queueRecord)
	r.slot = len(*h)
	*h = append(*h, r)
}

func (h *flightHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return r
}

// records is the state of one queue's records.
type records struct {
	main, dead lane
	handles    map[string]*queueRecord // the current receipt handle of each record in flight
	// maxReceives is the dead-letter threshold: MaxReceiveCount with BUILT_IN, 0 with NONE.
	maxReceives int32
}

func newRecords() *records {
	return &records{handles: map[string]*queueRecord{}}
}

func (s *records) add(r *queueRecord) { s.main.push(r) }

func (s *records) held() int { return s.main.size() + s.dead.size() }

// settle ends the deliveries whose visibility timeout has passed: their handles die, and the
// records become visible again in their lane, or dead letters (see land).
func (s *records) settle(now time.Time) {
	for _, l := range []*lane{&s.main, &s.dead} {
		for r := l.expired(now); r != nil; r = l.expired(now) {
			s.land(r)
		}
	}
}

// land puts a record whose delivery ended unacknowledged (timeout over, or visibility set to 0)
// back to visible. A main-lane record that has been received maxReceives times goes to the
// dead-letter lane instead: it becomes a dead letter as soon as its last allowed delivery is over,
// so ReceiveDeadLetterQueueRecords sees it at once and no normal receive is needed to move it.
func (s *records) land(r *queueRecord) {
	delete(s.handles, r.handle)
	if r.lane == &s.main && s.deadLetters(r) {
		s.dead.push(r)
		return
	}
	r.lane.push(r)
}

func (s *records) deadLetters(r *queueRecord) bool {
	return s.maxReceives > 0 && r.receives >= s.maxReceives
}

// take receives up to limit visible records of lane l, in random order, each with a new handle
// and in flight for visibility. A main-lane record already received maxReceives times (possible
// after UpdateQueue lowered MaxReceiveCount) goes to the dead-letter lane instead of out.
// Receives count in both lanes: a dead letter's ReceiveCount goes on from MaxReceiveCount, as an
// SQS message's receive count does in its dead-letter queue (AWS documents nothing here).
func (s *records) take(l *lane, limit int, now time.Time, visibility time.Duration) []*queueRecord {
	var out []*queueRecord
	for len(out) < limit && len(l.visible) > 0 {
		r := l.pick()
		if l == &s.main && s.deadLetters(r) {
			s.dead.push(r)
			continue
		}
		r.receives++
		if r.first.IsZero() {
			r.first = now
		}
		h := randomHex()
		s.handles[h] = r
		l.fly(r, now.Add(visibility), h)
		out = append(out, r)
	}
	return out
}

// inFlight returns the record that handle names in lane l, if that delivery is still in flight:
// handles of acknowledged, expired, restored or since re-received records are unknown.
func (s *records) inFlight(handle string, l *lane) (*queueRecord, bool) {
	r, ok := s.handles[handle]
	return r, ok && r.lane == l
}

// drop forgets a record: AcknowledgeQueueRecords and AcknowledgeDeadLetterQueueRecords.
func (s *records) drop(r *queueRecord) {
	delete(s.handles, r.handle)
	r.lane.remove(r)
}

// setVisibility moves an in-flight record's deadline to now+d; with d = 0 the delivery ends now.
func (s *records) setVisibility(r *queueRecord, now time.Time, d time.Duration) {
	if d == 0 {
		r.lane.remove(r)
		s.land(r)
		return
	}
	r.deadline = now.Add(d)
	heap.Fix(&r.lane.flight, r.slot)
}

// restore returns a dead letter to the main lane, visible, with its receive count reset. Its first
// receive time stays: the record was received then.
func (s *records) restore(r *queueRecord) {
	s.drop(r)
	r.receives = 0
	s.main.push(r)
}

// nextDeadline is when the earliest delivery in flight ends, in either lane (an expiry in the
// main lane can make a dead letter).
func (s *records) nextDeadline() (time.Time, bool) {
	var next time.Time
	for _, l := range []*lane{&s.main, &s.dead} {
		if len(l.flight) > 0 && (next.IsZero() || l.flight[0].deadline.Before(next)) {
			next = l.flight[0].deadline
		}
	}
	return next, !next.IsZero()
}

// randomHex returns 128 random bits in hex: receipt handles and queue ids, never reused.
func randomHex() string {
	return fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64())
}
