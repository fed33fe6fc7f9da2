package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// tally counts what was sent and what each consumer received. Records are "soak|<id>|<put unix
// nanos>", the put time taken just before Invoke.
type tally struct {
	mu        sync.Mutex
	sent      map[int64]bool // creates that returned success
	failed    map[int64]bool // creates that returned an error (they may still have been written)
	received  map[int64]int  // deliveries per record, all consumers together
	byName    map[string]int // deliveries per consumer
	foreign   int            // deliveries that are not soak records
	latencies []time.Duration
}

func newTally() *tally {
	return &tally{sent: map[int64]bool{}, failed: map[int64]bool{}, received: map[int64]int{}, byName: map[string]int{}}
}

func recordData(id int64, put time.Time) string {
	return "soak|" + strconv.FormatInt(id, 10) + "|" + strconv.FormatInt(put.UnixNano(), 10)
}

func parseRecord(data string) (id, putNanos int64, ok bool) {
	parts := strings.Split(data, "|")
	if len(parts) != 3 || parts[0] != "soak" {
		return 0, 0, false
	}
	id, err1 := strconv.ParseInt(parts[1], 10, 64)
	putNanos, err2 := strconv.ParseInt(parts[2], 10, 64)
	return id, putNanos, err1 == nil && err2 == nil
}

func (t *tally) putResult(id int64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err == nil {
		t.sent[id] = true
	} else {
		t.failed[id] = true
	}
}

// delivered records one delivery; the first delivery of a record gives its latency.
func (t *tally) delivered(consumer, data string, handlerNanos int64) {
	id, put, ok := parseRecord(data)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byName[consumer]++
	if !ok {
		t.foreign++
		return
	}
	t.received[id]++
	if t.received[id] == 1 {
		t.latencies = append(t.latencies, time.Duration(handlerNanos-put))
	}
}

// outstanding counts successful creates not delivered yet.
func (t *tally) outstanding() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for id := range t.sent {
		if t.received[id] == 0 {
			n++
		}
	}
	return n
}

func (t *tally) counts() (sent, failed, received int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sent), len(t.failed), len(t.received)
}

// summary is the final figures.
type summary struct {
	sent, failed, receivedDistinct, deliveries, lost, duplicated, failedButDelivered, foreign int
	p50, p99, max                                                                             time.Duration
	byName                                                                                    map[string]int
	lostExamples                                                                              []int64
}

func (t *tally) summarize() summary {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := summary{sent: len(t.sent), failed: len(t.failed), receivedDistinct: len(t.received), foreign: t.foreign,
		byName: maps.Clone(t.byName)}
	for id, n := range t.received {
		s.deliveries += n
		s.duplicated += n - 1
		if t.failed[id] {
			s.failedButDelivered++
		}
	}
	for id := range t.sent {
		if t.received[id] == 0 {
			s.lost++
			if len(s.lostExamples) < 10 {
				s.lostExamples = append(s.lostExamples, id)
			}
		}
	}
	slices.Sort(s.lostExamples)
	lat := slices.Clone(t.latencies)
	slices.Sort(lat)
	s.p50, s.p99, s.max = percentile(lat, 0.50), percentile(lat, 0.99), percentile(lat, 1)
	return s
}

// percentile of sorted values, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func (s summary) print(w io.Writer) {
	fmt.Fprintf(w, "records sent (create ok):        %d\n", s.sent)
	fmt.Fprintf(w, "creates failed:                  %d (of which delivered anyway: %d)\n", s.failed, s.failedButDelivered)
	fmt.Fprintf(w, "records received (distinct):     %d\n", s.receivedDistinct)
	fmt.Fprintf(w, "deliveries (all):                %d\n", s.deliveries)
	fmt.Fprintf(w, "lost (sent, never received):     %d\n", s.lost)
	if s.lost > 0 {
		fmt.Fprintf(w, "  e.g. record ids %v\n", s.lostExamples)
	}
	fmt.Fprintf(w, "duplicated (extra deliveries):   %d\n", s.duplicated)
	if s.foreign > 0 {
		fmt.Fprintf(w, "foreign deliveries:              %d\n", s.foreign)
	}
	fmt.Fprintf(w, "put-to-handler latency:          p50 %v  p99 %v  max %v\n",
		s.p50.Round(time.Millisecond), s.p99.Round(time.Millisecond), s.max.Round(time.Millisecond))
	names := make([]string, 0, len(s.byName))
	for n := range s.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(w, "deliveries by %-18s %d\n", n+":", s.byName[n])
	}
}

// rssSeries keeps each consumer's RSS samples.
type rssSeries struct {
	names   []string
	samples map[string][]int // KiB
}

func (r *rssSeries) add(name string, kib int) {
	if r.samples == nil {
		r.samples = map[string][]int{}
	}
	if _, ok := r.samples[name]; !ok {
		r.names = append(r.names, name)
	}
	r.samples[name] = append(r.samples[name], kib)
}

func (r *rssSeries) print(w io.Writer) {
	for _, n := range r.names {
		s := r.samples[n]
		if len(s) == 0 {
			continue
		}
		fmt.Fprintf(w, "RSS %-12s first %s  min %s  max %s  last %s  (%d samples)\n", n+":",
			mib(s[0]), mib(slices.Min(s)), mib(slices.Max(s)), mib(s[len(s)-1]), len(s))
	}
}

func mib(kib int) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
