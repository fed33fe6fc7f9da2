package delivery

import (
	"time"

	"github.com/dapr-kinesis/kinesis/internal/backoff"
)

// entry is one record of the window: read, and either not yet done or done but behind one that is
// not.
type entry struct {
	userRecord
	key      *keyQueue // nil for a record with nothing to deliver
	order    uint64    // place in the tenure's sequence order
	size     int       // bytes held until the record is done
	done     bool
	attempts int
	retry    backoff.Exponential
	due      time.Time // when a failed record is tried again
	// dead is set once the record is given up on: its next calls are puts to the dead-letter sink.
	dead *DeadLetter
}

// window holds the tenure's records in sequence order from the oldest one not yet done; the
// checkpoint follows its front.
type window struct {
	records    []*entry
	next       uint64
	bytes      int // of records not yet done
	checkpoint string
}

func (w *window) len() int { return len(w.records) }

func (w *window) push(e *entry) {
	e.order = w.next
	w.next++
	w.records = append(w.records, e)
	if !e.done {
		w.bytes += e.size
	}
}

// done marks e delivered (or skipped) and lets its bytes go.
func (w *window) done(e *entry) {
	e.done = true
	w.bytes -= e.size
	e.rec.Data = nil
}

// advance moves the checkpoint past the done records at the front.
func (w *window) advance() {
	for len(w.records) > 0 && w.records[0].done {
		e := w.records[0]
		w.checkpoint = e.pos.Checkpoint(e.of)
		w.records[0] = nil
		w.records = w.records[1:]
	}
}
