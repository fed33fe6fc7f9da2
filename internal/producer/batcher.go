package producer

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// batcher gathers concurrent create calls into PutRecords requests. One goroutine, loop, owns the
// batch being filled; each request it sends runs in a goroutine of its own, which loop starts, counts
// and waits for before it ends.
//
// A batch goes out, once a request slot is free, when it is full, when no request is in flight, or
// when its first record has waited the linger. So a lone caller pays no linger (as with Nagle's
// algorithm, records gather only while the server is busy with earlier ones), and while every slot
// is taken the batch keeps filling: load turns into bigger requests rather than more of them.
type batcher struct {
	p      *Producer
	linger time.Duration

	// waiting counts records handed to loop whose callers still wait, for Close's log.
	waiting atomic.Int64

	in    chan *pendingRecord
	stop  chan struct{} // closed by Close: flush what is buffered, accept nothing more
	idle  chan struct{} // signalled when the last request in flight ends
	done  chan struct{} // closed when loop and every request it started have finished
	start sync.Once
}

func newBatcher(p *Producer, linger time.Duration) *batcher {
	return &batcher{
		p:      p,
		linger: linger,
		in:     make(chan *pendingRecord),
		stop:   make(chan struct{}),
		idle:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
}

// put hands rec to the batch and waits for its outcome. The loop starts with the first call, so an
// instance daprd uses for input only runs no goroutine for output.
func (b *batcher) put(ctx context.Context, rec *record) putResult {
	b.start.Do(func() { go b.loop() })
	deadline, _ := ctx.Deadline()
	pr := newPendingRecord(rec, deadline)
	select {
	case b.in <- pr:
		b.waiting.Add(1)
		defer b.waiting.Add(-1)
	case <-b.stop: // Close came first: nothing was sent, and ErrClosed says so
		return putResult{err: ErrClosed}
	case <-ctx.Done():
		return putResult{err: notWritten(context.Cause(ctx))}
	}
	return pr.wait(ctx)
}

// started tells Close whether there is a loop to wait for. Close asks only after every call has
// returned, so no call can start the loop afterwards.
func (b *batcher) started() bool {
	started := true
	b.start.Do(func() { started = false; close(b.done) })
	return started
}

// batch is the request being filled. With aggregation its records are counted as the aggregates
// they will be packed into (see packer): a request then carries many more records than entries.
type batch struct {
	entries []*pendingRecord // user records, in the order they came
	bytes   int
	kpl     *packer // nil without aggregation
}

// newBatch starts an empty batch, of aggregates while the producer aggregates.
func (p *Producer) newBatch() batch {
	if p.aggregating() {
		return batch{kpl: newPacker(p.aggregateLimit())}
	}
	return plainBatch()
}

// plainBatch starts an empty batch of records sent as they are.
func plainBatch() batch { return batch{} }

func (bt *batch) fits(pr *pendingRecord) bool {
	if bt.kpl != nil {
		entries, bytes := bt.kpl.cost(pr)
		return len(bt.kpl.entries)+entries <= MaxBatchRecords && bt.kpl.bytes+bytes <= MaxBatchBytes
	}
	return len(bt.entries) < MaxBatchRecords && bt.bytes+pr.rec.Size() <= MaxBatchBytes
}

func (bt *batch) full() bool {
	n := len(bt.entries)
	if bt.kpl != nil {
		n = len(bt.kpl.entries)
	}
	return n == MaxBatchRecords || bt.bytes == MaxBatchBytes
}

func (bt *batch) add(pr *pendingRecord) {
	bt.entries = append(bt.entries, pr)
	if bt.kpl != nil {
		bt.kpl.add(pr)
		bt.bytes = bt.kpl.bytes
		return
	}
	bt.bytes += pr.rec.Size()
}

func (b *batcher) loop() {
	var senders sync.WaitGroup
	defer close(b.done)
	defer senders.Wait()

	var (
		cur      = b.p.newBatch()
		carry    *pendingRecord // arrived when cur had no room for it; goes first into the next batch
		due      bool           // cur has lingered long enough (or is full, or we are stopping)
		stopping bool
		stop     = b.stop
	)
	linger := time.NewTimer(b.linger)
	linger.Stop()
	defer linger.Stop()

	accept := func(pr *pendingRecord) {
		if len(cur.entries) > 0 && !cur.fits(pr) {
			carry, due = pr, true
			return
		}
		if len(cur.entries) == 0 {
			linger.Reset(b.linger)
		}
		cur.add(pr)
		due = due || cur.full() || stopping || b.p.inFlight() == 0
	}

	for {
		if stopping && len(cur.entries) == 0 && carry == nil {
			return
		}
		in := b.in
		if stopping || carry != nil || cur.full() {
			in = nil // hold callers back until cur has gone out
		}
		var slots chan struct{}
		if due && len(cur.entries) > 0 {
			slots = b.p.slots
		}
		select {
		case pr := <-in:
			accept(pr)
		case <-linger.C:
			due = true
		case <-b.idle:
			due = due || (len(cur.entries) > 0 && b.p.inFlight() == 0)
		case slots <- struct{}{}:
			send := cur.entries
			cur, due = b.p.newBatch(), stopping
			linger.Stop()
			senders.Add(1)
			go b.sendBatch(send, &senders)
			if carry != nil {
				pr := carry
				carry = nil
				accept(pr)
			}
		case <-stop:
			stopping, due = true, true
			stop = nil // a closed channel would win every select from now on
		case <-b.p.abortCtx.Done():
			// Close gave up waiting for a free slot: these were never sent.
			for _, pr := range cur.entries {
				pr.giveUp(pr.gaveUp(context.Cause(b.p.abortCtx)))
			}
			if carry != nil {
				carry.giveUp(carry.gaveUp(context.Cause(b.p.abortCtx)))
			}
			return
		}
	}
}

// sendBatch sends one batch in its own goroutine and frees its slot. The request is bounded by the
// latest of its callers' deadlines, not by any one caller, and by Close's grace period.
func (b *batcher) sendBatch(entries []*pendingRecord, wg *sync.WaitGroup) {
	defer wg.Done()
	defer b.p.releaseSlot()
	var last time.Time
	for _, pr := range entries {
		if pr.deadline.After(last) {
			last = pr.deadline
		}
	}
	if last.IsZero() { // create always sets a deadline; this only guards against an endless request
		last = time.Now().Add(throttleRetryBudget)
	}
	ctx, cancel := context.WithDeadline(b.p.abortCtx, last)
	defer cancel()
	b.p.send(ctx, entries)
}
