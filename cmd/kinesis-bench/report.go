package main

import (
	"fmt"
	"slices"
	"time"
)

// result is one case's measurements. Only calls that succeeded count towards records/s and latency.
type result struct {
	server      string
	mode        mode
	aggregation string // of the binding's cases; "-" for the SDK's
	callers     int
	// kinesisRecords is the distinct positions the binding's answers named; 0 for the SDK's cases.
	kinesisRecords int
	records        int
	latencies      []time.Duration // per call
	errors         int
	cut            int // calls cancelled at the end of the drain
	firstErr       error
	elapsed        time.Duration // from the first call to the last caller's return
}

func (r *result) rate() float64 { return float64(r.records) / r.elapsed.Seconds() }

// perRecord is the Kinesis records written per user record.
func (r *result) perRecord() string {
	if r.kinesisRecords == 0 || r.records == 0 {
		return "1"
	}
	return fmt.Sprintf("%.3f", float64(r.kinesisRecords)/float64(r.records))
}

func (r *result) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.latencies)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func printHeader() {
	fmt.Println("| callers | mode | aggregation | records/s | Kinesis records/record | p50 | p99 | calls | errors | cut |")
	fmt.Println("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
}

func printRow(r result) {
	fmt.Printf("| %d | %s | %s | %.0f | %s | %s | %s | %d | %d | %d |\n", r.callers, r.mode, r.aggregation, r.rate(), r.perRecord(),
		ms(r.percentile(0.50)), ms(r.percentile(0.99)), len(r.latencies), r.errors, r.cut)
	if r.firstErr != nil {
		fmt.Printf("|   | first error: %.200v | | | | | | | | |\n", r.firstErr)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// printTargets checks the targets: at 64 callers (a) >= 4x (b) and >= 0.8x (c); with one
// caller (a)'s p50 latency <= (b)'s plus the linger.
func printTargets(all []result, cfg *config) {
	find := func(server string, m mode, n int) *result {
		for i := range all {
			if all[i].server == server && all[i].mode == m && all[i].callers == n && all[i].aggregation != "kpl" {
				return &all[i]
			}
		}
		return nil
	}
	linger := 2 * time.Millisecond
	if cfg.linger != "" {
		if d, err := time.ParseDuration(cfg.linger); err == nil {
			linger = d
		}
	}
	fmt.Println("## targets")
	fmt.Println()
	for _, server := range cfg.servers {
		a, b, c := find(server, modeCreate, 64), find(server, modePutRecord, 64), find(server, modePutRecords, 64)
		if a != nil && b != nil {
			fmt.Printf("- %s, 64 callers: (a)/(b) = %.1fx (target >= 4x): %s\n", server, a.rate()/b.rate(), verdict(a.rate() >= 4*b.rate()))
		}
		if a != nil && c != nil && c.records > 0 {
			fmt.Printf("- %s, 64 callers: (a)/(c) = %.2fx (target >= 0.8x): %s\n", server, a.rate()/c.rate(), verdict(a.rate() >= 0.8*c.rate()))
		}
		if a != nil && c != nil && c.records == 0 {
			fmt.Printf("- %s, 64 callers: (c) not measurable: no PutRecords of 500 finished within the drain\n", server)
		}
		if best := bestRate(all, server, modePutRecords); a != nil && best != nil && best.records > 0 {
			fmt.Printf("- %s, 64 callers: (a) vs the best (c) at any caller count (%d callers, %.0f records/s) = %.2fx\n",
				server, best.callers, best.rate(), a.rate()/best.rate())
		}
		a1, b1 := find(server, modeCreate, 1), find(server, modePutRecord, 1)
		if a1 != nil && b1 != nil {
			pa, pb := a1.percentile(0.5), b1.percentile(0.5)
			fmt.Printf("- %s, 1 caller: (a) p50 %s vs (b) p50 %s + linger %s = %s: %s\n", server, ms(pa), ms(pb), linger, ms(pb+linger), verdict(pa <= pb+linger))
		}
	}
}

// printAggregationTargets compares aggregation kpl with none, case by case; the target is kpl >= 4x
// none for create at 256 callers.
func printAggregationTargets(all []result, cfg *config) {
	find := func(server string, m mode, n int, agg string) *result {
		for i := range all {
			if r := &all[i]; r.server == server && r.mode == m && r.callers == n && r.aggregation == agg {
				return r
			}
		}
		return nil
	}
	for _, server := range cfg.servers {
		for _, n := range cfg.callers {
			for _, m := range []mode{modeCreate, modeBulk} {
				none, agg := find(server, m, n, "none"), find(server, m, n, "kpl")
				if none == nil || agg == nil || none.records == 0 {
					continue
				}
				ratio := agg.rate() / none.rate()
				line := fmt.Sprintf("- %s, %s, %d callers: kpl/none = %.1fx user records/s (%.0f vs %.0f), %s vs %s Kinesis records per user record",
					server, m, n, ratio, agg.rate(), none.rate(), agg.perRecord(), none.perRecord())
				if m == modeCreate && n == 256 {
					line += " (target >= 4x): " + verdict(ratio >= 4)
				}
				fmt.Println(line)
			}
		}
	}
}

func bestRate(all []result, server string, m mode) *result {
	var best *result
	for i := range all {
		if r := &all[i]; r.server == server && r.mode == m && (best == nil || r.rate() > best.rate()) {
			best = r
		}
	}
	return best
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
