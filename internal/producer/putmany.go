package producer

import (
	"context"
	"sync"
)

// PutMany writes recs with as few PutRecords requests as their count and size allow, sent
// concurrently within the producer's request slots, and returns each record's outcome in order:
// a Result, or in Err a *RecordSizeError (not sent) or the failure, which says whether the record
// may have been written. It returns early with (nil, ErrClosed) when Close came first, and with
// every outcome and ctx's cause when ctx ended before every record was answered.
func (p *Producer) PutMany(ctx context.Context, recs []Record) ([]Outcome, error) {
	leave, err := p.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	ctx, cancel := p.callContext(ctx)
	defer cancel()

	limit := p.recordSizeLimit(ctx)
	out := make([]Outcome, len(recs))
	deadline, _ := ctx.Deadline()
	placed := make([]*record, 0, len(recs))
	pending := make([]*pendingRecord, 0, len(recs))
	index := make([]int, 0, len(recs)) // pending[k] answers out[index[k]]
	for i := range recs {
		if err := recs[i].CheckSize(limit); err != nil {
			out[i].Err = err
			continue
		}
		r := &record{Record: recs[i]}
		placed = append(placed, r)
		pending = append(pending, newPendingRecord(r, deadline))
		index = append(index, i)
	}

	if p.aggregating() {
		p.place(ctx, placed...)
	}
	p.sendChunks(ctx, p.chunks(pending))

	for k, pr := range pending {
		if pr.state.Load() == statePending { // its chunk never got a request slot before ctx ended
			pr.giveUp(pr.gaveUp(context.Cause(ctx)))
		}
		res := <-pr.res
		out[index[k]] = Outcome{Result: res.Result, Err: res.err}
	}
	if ctx.Err() != nil {
		return out, context.Cause(ctx)
	}
	return out, nil
}

// Outcome is one record's answer from PutMany: where it was written, or why not.
type Outcome struct {
	Result
	Err error
}

// chunks splits records into PutRecords-sized groups, in order; with aggregation, into groups
// whose aggregates fill a request.
func (p *Producer) chunks(records []*pendingRecord) [][]*pendingRecord {
	return split(records, p.newBatch)
}

// split groups records, in order, into batches that newBatch's kind of batch says one request holds.
func split(records []*pendingRecord, newBatch func() batch) [][]*pendingRecord {
	var out [][]*pendingRecord
	cur := newBatch()
	for _, pr := range records {
		if len(cur.entries) > 0 && !cur.fits(pr) {
			out = append(out, cur.entries)
			cur = newBatch()
		}
		cur.add(pr)
	}
	if len(cur.entries) > 0 {
		out = append(out, cur.entries)
	}
	return out
}

// sendChunks sends the chunks concurrently within the producer's request slots and returns when
// every chunk has been answered or ctx has ended. The goroutines belong to this call: they end with
// it because their requests are bound to ctx.
func (p *Producer) sendChunks(ctx context.Context, groups [][]*pendingRecord) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, group := range groups {
		select {
		case p.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.releaseSlot()
			p.send(ctx, group)
		}()
	}
}
