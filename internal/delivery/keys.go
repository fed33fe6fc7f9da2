package delivery

import "container/heap"

// keyQueue is the records of one partition key not yet done, in sequence order. Only its first
// record may be running, ready or waiting for a retry, so a key is in at most one heap.
type keyQueue struct {
	name    string
	records []*entry
}

// readyKeys holds the keys whose first record may start now, oldest record first: the watermark
// then moves as soon as it can.
type readyKeys struct{ h keyHeap }

func (r *readyKeys) len() int         { return len(r.h.keys) }
func (r *readyKeys) push(k *keyQueue) { heap.Push(&r.h, k) }
func (r *readyKeys) pop() *keyQueue   { return heap.Pop(&r.h).(*keyQueue) } //nolint:forcetypeassert // holds keys only

// retryKeys holds the keys whose first record failed and waits for its retry time, soonest first.
type retryKeys struct{ h keyHeap }

func (r *retryKeys) push(k *keyQueue) { heap.Push(&r.h, k) }

func (r *retryKeys) pop() *keyQueue { return heap.Pop(&r.h).(*keyQueue) } //nolint:forcetypeassert // holds keys only

func (r *retryKeys) peek() *keyQueue {
	if len(r.h.keys) == 0 {
		return nil
	}
	return r.h.keys[0]
}

// keyHeap is a container/heap of keys ordered by their first record: by its order in the shard, or
// by when it is due for a retry.
type keyHeap struct {
	keys  []*keyQueue
	byDue bool
}

func (h *keyHeap) Len() int      { return len(h.keys) }
func (h *keyHeap) Swap(i, j int) { h.keys[i], h.keys[j] = h.keys[j], h.keys[i] }
func (h *keyHeap) Push(x any)    { h.keys = append(h.keys, x.(*keyQueue)) } //nolint:forcetypeassert // holds keys only

func (h *keyHeap) Less(i, j int) bool {
	a, b := h.keys[i].records[0], h.keys[j].records[0]
	if h.byDue {
		return a.due.Before(b.due)
	}
	return a.order < b.order
}

func (h *keyHeap) Pop() any {
	last := len(h.keys) - 1
	k := h.keys[last]
	h.keys[last] = nil
	h.keys = h.keys[:last]
	return k
}
