// Command kinesis-bench measures the output binding against the local emulators it starts itself:
// records/s and per-call latency for create, bulkCreate and the SDK's PutRecord and PutRecords, with
// 1 KiB records and 1 to 256 concurrent callers, each case on a fresh stream. With -aggregation the
// binding's cases run once per aggregation mode, side by side; the table then also shows how many
// Kinesis records were written per user record (distinct positions in the answers).
//
//	go run ./cmd/kinesis-bench                  # everything, about 3 minutes
//	go run ./cmd/kinesis-bench -servers kinesalite -callers 64 -duration 5s
//	go run ./cmd/kinesis-bench -modes a,d -callers 64,256 -record-size 100 -aggregation none,kpl
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

type config struct {
	servers     []string
	callers     []int
	modes       []mode
	duration    time.Duration // how long callers start new calls, per case
	warmUp      time.Duration // load on a fresh server before each case
	drain       time.Duration // how long calls started before the end may still finish
	recordSize  int
	shards      int32
	linger      string // binding metadata batchLinger; "" keeps the binding's default
	maxInFlight string // binding metadata maxInFlightBatches; "" keeps the default
	aggregation []string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kinesis-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		cfg                                  config
		servers, callers, modes, aggregation string
		timeout                              time.Duration
	)
	flag.StringVar(&servers, "servers", "kinesalite,kinesis-local", "emulators to measure, in order")
	flag.StringVar(&callers, "callers", "1,16,64,256", "concurrent callers per case")
	flag.StringVar(&modes, "modes", "a,b,c,d", "a=binding create, b=SDK PutRecord per call, c=SDK PutRecords of 500, d=binding bulkCreate of 500")
	flag.DurationVar(&cfg.duration, "duration", 2*time.Second, "measuring time per case")
	flag.DurationVar(&cfg.warmUp, "warm-up", 1500*time.Millisecond, "load put on each fresh server before its case")
	flag.DurationVar(&cfg.drain, "drain", 10*time.Second, "longest wait for calls still running when a case ends; calls cut off are reported, not counted")
	flag.IntVar(&cfg.recordSize, "record-size", 1024, "bytes per record")
	flag.Func("shards", "shards per stream (default 4)", func(s string) error {
		n, err := strconv.ParseInt(s, 10, 32)
		cfg.shards = int32(n)
		return err
	})
	flag.StringVar(&cfg.linger, "linger", "", "binding batchLinger (default: the binding's)")
	flag.StringVar(&cfg.maxInFlight, "max-in-flight", "", "binding maxInFlightBatches (default: the binding's)")
	flag.StringVar(&aggregation, "aggregation", "none", "binding aggregation values for (a) and (d), side by side: none, kpl or none,kpl")
	flag.DurationVar(&timeout, "timeout", 15*time.Minute, "bound on the whole run")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.shards == 0 {
		cfg.shards = 4
	}
	cfg.servers = strings.Split(servers, ",")
	var err error
	if cfg.callers, err = parseInts(callers); err != nil {
		return fmt.Errorf("-callers: %w", err)
	}
	if cfg.modes, err = parseModes(modes); err != nil {
		return fmt.Errorf("-modes: %w", err)
	}
	for _, a := range strings.Split(aggregation, ",") {
		if a = strings.TrimSpace(a); a != "none" && a != "kpl" {
			return fmt.Errorf("-aggregation: %q is not none or kpl", a)
		}
		cfg.aggregation = append(cfg.aggregation, strings.TrimSpace(a))
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Printf("kinesis-bench: %d-byte records, %s per case (+ up to %s drain), %d-shard stream, fresh server warmed up for %s per case, batchLinger=%s maxInFlightBatches=%s aggregation=%s\n\n",
		cfg.recordSize, cfg.duration, cfg.drain, cfg.shards, cfg.warmUp, orDefault(cfg.linger), orDefault(cfg.maxInFlight), strings.Join(cfg.aggregation, ","))
	var all []result
	for _, server := range cfg.servers {
		fmt.Printf("## %s\n\n", server)
		printHeader()
		for _, n := range cfg.callers {
			for _, m := range cfg.modes {
				aggs := cfg.aggregation
				if m != modeCreate && m != modeBulk {
					aggs = []string{"-"} // the SDK cases do not aggregate
				}
				for _, agg := range aggs {
					r, err := runOnFreshServer(ctx, &cfg, server, m, n, agg)
					if err != nil {
						return fmt.Errorf("%s, %s, %d callers, aggregation %s: %w", server, m, n, agg, err)
					}
					printRow(r)
					all = append(all, r)
				}
			}
		}
		fmt.Println()
	}
	printTargets(all, &cfg)
	printAggregationTargets(all, &cfg)
	if ctx.Err() != nil {
		return errors.New("stopped before the end: " + context.Cause(ctx).Error())
	}
	return nil
}

// runOnFreshServer starts the emulators, warms the server up, runs one case and stops them. A
// fresh server per case keeps cases apart: kinesis-local slows down as it fills, and both servers
// keep working on requests a case gave up on.
func runOnFreshServer(ctx context.Context, cfg *config, server string, m mode, n int, agg string) (result, error) {
	srv, err := localaws.Start(ctx, localaws.Options{Kinesalite: server == "kinesalite"})
	if err != nil {
		return result{}, err
	}
	defer func() {
		if stopErr := srv.Stop(); stopErr != nil {
			fmt.Fprintln(os.Stderr, "kinesis-bench:", stopErr)
		}
	}()
	t, err := newTarget(srv, server)
	if err != nil {
		return result{}, err
	}
	if err := warmUp(ctx, cfg, t); err != nil {
		return result{}, fmt.Errorf("warm-up: %w", err)
	}
	return runCase(ctx, cfg, t, m, n, agg)
}

func orDefault(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}
