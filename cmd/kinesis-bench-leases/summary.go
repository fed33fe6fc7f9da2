package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/leases"
)

// figures is what one protocol's cases measured; a case that did not run leaves its field nil.
type figures struct {
	one      *time.Duration
	three    *ownedFair
	rolling  *rollingFigures
	cost     *costFigures
	failover []time.Duration // one per run
}

// ownedFair is the time from Read until every shard was owned, and until the split was fair.
type ownedFair struct{ all, fair time.Duration }

type rollingFigures struct {
	fair       time.Duration // from the replacement's Read
	lost, dups int
}

type costFigures struct {
	ownedFair
	idle, busy *rates // busy is nil when -busy is 0
}

// metric is one row of the summary: how to read it from a protocol's figures (ok false: not
// measured) and how many decimals to print.
type metric struct {
	label    string
	decimals int
	get      func(f *figures) (float64, bool)
}

// printSummary prints the figures side by side, one column per protocol, and the ratio heartbeat /
// renewal when both ran: the before and after of moving to heartbeats. Only the rows of cases that
// ran are printed.
func printSummary(protos []leases.Protocol, figs map[leases.Protocol]*figures, cfg costConfig) {
	var rows []metric
	for _, m := range metrics(cfg) {
		if slices.ContainsFunc(protos, func(p leases.Protocol) bool { _, ok := m.get(figs[p]); return ok }) {
			rows = append(rows, m)
		}
	}
	if len(rows) == 0 {
		return
	}
	ratio := slices.Contains(protos, leases.ProtocolRenewal) && slices.Contains(protos, leases.ProtocolHeartbeat)
	var header strings.Builder
	fmt.Fprintf(&header, "summary  %-30s", "")
	for _, p := range protos {
		fmt.Fprintf(&header, " %10s", p)
	}
	if ratio {
		fmt.Fprintf(&header, " %18s", "heartbeat/renewal")
	}
	fmt.Println(header.String())
	for _, m := range rows {
		fmt.Println(summaryRow(m, protos, figs, ratio))
	}
}

func summaryRow(m metric, protos []leases.Protocol, figs map[leases.Protocol]*figures, ratio bool) string {
	var line strings.Builder
	fmt.Fprintf(&line, "summary  %-30s", m.label)
	for _, p := range protos {
		if v, ok := m.get(figs[p]); ok {
			fmt.Fprintf(&line, " %10.*f", m.decimals, v)
		} else {
			fmt.Fprintf(&line, " %10s", "-")
		}
	}
	if !ratio {
		return line.String()
	}
	before, okBefore := m.get(figs[leases.ProtocolRenewal])
	after, okAfter := m.get(figs[leases.ProtocolHeartbeat])
	if !okBefore || !okAfter || before == 0 {
		fmt.Fprintf(&line, " %18s", "-") // nothing to divide by (a count of 0, say)
	} else {
		fmt.Fprintf(&line, " %18.2f", after/before)
	}
	return line.String()
}

// metrics are the summary's rows, in order; the failover rows depend on -failover-runs.
func metrics(cfg costConfig) []metric {
	out := []metric{
		{"cost all owned (s)", 2, func(f *figures) (float64, bool) { return costTime(f, false) }},
		{"cost fair (s)", 2, func(f *figures) (float64, bool) { return costTime(f, true) }},
	}
	out = append(out, rateMetrics("idle", func(c *costFigures) *rates { return c.idle }, true)...)
	out = append(out, rateMetrics("busy", func(c *costFigures) *rates { return c.busy }, false)...)
	out = append(out, failoverMetrics(cfg.failoverRuns)...)
	out = append(out,
		metric{"rolling lost", 0, func(f *figures) (float64, bool) {
			return rollingFigure(f, func(r *rollingFigures) float64 { return float64(r.lost) })
		}},
		metric{"rolling duplicates", 0, func(f *figures) (float64, bool) {
			return rollingFigure(f, func(r *rollingFigures) float64 { return float64(r.dups) })
		}},
		metric{"rolling time to fair (s)", 2, func(f *figures) (float64, bool) {
			return rollingFigure(f, func(r *rollingFigures) float64 { return r.fair.Seconds() })
		}},
		metric{"three all owned (s)", 2, func(f *figures) (float64, bool) { return threeTime(f, false) }},
		metric{"three fair (s)", 2, func(f *figures) (float64, bool) { return threeTime(f, true) }},
		metric{"one all owned (s)", 2, func(f *figures) (float64, bool) {
			if f.one == nil {
				return 0, false
			}
			return f.one.Seconds(), true
		}},
	)
	return out
}

// rateMetrics are a cost phase's rows: all of them for idle, what it costs for busy (whose calls are
// mostly checkpoints, the same under both protocols).
func rateMetrics(phase string, of func(*costFigures) *rates, all bool) []metric {
	row := func(label string, decimals int, v func(*rates) float64) metric {
		return metric{phase + " " + label, decimals, func(f *figures) (float64, bool) {
			if f.cost == nil || of(f.cost) == nil {
				return 0, false
			}
			return v(of(f.cost)), true
		}}
	}
	cost := []metric{
		row("RCU/s", 2, func(r *rates) float64 { return r.rcu }),
		row("WCU/s", 2, func(r *rates) float64 { return r.wcu }),
		row("$/month", 2, func(r *rates) float64 { return r.monthly }),
	}
	if !all {
		return cost
	}
	return append([]metric{
		row("calls/s", 2, func(r *rates) float64 { return r.calls }),
		row("scans/s", 2, func(r *rates) float64 { return r.scans }),
		row("UpdateItem/s", 2, func(r *rates) float64 { return r.updates }),
		row("  of which heartbeats", 2, func(r *rates) float64 { return r.heartbeatWrite }),
		row("GetItem/s", 2, func(r *rates) float64 { return r.gets }),
		row("  of which heartbeats", 2, func(r *rates) float64 { return r.heartbeatRead }),
	}, cost...)
}

// failoverMetrics are each run's time (when there are several) and their median.
func failoverMetrics(runs int) []metric {
	var out []metric
	if runs > 1 {
		for i := range runs {
			out = append(out, metric{fmt.Sprintf("failover run %d (s)", i+1), 2, func(f *figures) (float64, bool) {
				if i >= len(f.failover) {
					return 0, false
				}
				return f.failover[i].Seconds(), true
			}})
		}
	}
	label := "failover (s)"
	if runs > 1 {
		label = "failover median (s)"
	}
	return append(out, metric{label, 2, func(f *figures) (float64, bool) {
		if len(f.failover) == 0 {
			return 0, false
		}
		return median(f.failover).Seconds(), true
	}})
}

func costTime(f *figures, fairTime bool) (float64, bool) {
	if f.cost == nil {
		return 0, false
	}
	return pick(f.cost.ownedFair, fairTime), true
}

func threeTime(f *figures, fairTime bool) (float64, bool) {
	if f.three == nil {
		return 0, false
	}
	return pick(*f.three, fairTime), true
}

func pick(o ownedFair, fairTime bool) float64 {
	if fairTime {
		return o.fair.Seconds()
	}
	return o.all.Seconds()
}

func rollingFigure(f *figures, v func(*rollingFigures) float64) (float64, bool) {
	if f.rolling == nil {
		return 0, false
	}
	return v(f.rolling), true
}

// median is the middle duration, or the mean of the two middle ones; ds must not be empty.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
