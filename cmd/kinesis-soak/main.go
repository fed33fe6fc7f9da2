// Command kinesis-soak runs the binding for a while against local emulators it starts itself, with
// producers calling Invoke("create") and two or more consumer processes reading the stream in
// shared mode under one consumerName, optionally through a fault proxy that cuts every connection
// periodically, and prints what happened: records sent, received, lost, duplicated, the latency
// from Invoke to the handler, and each consumer's RSS over time. It prints figures; it asserts no
// timing. It exits 1 if a record whose create succeeded was never delivered.
//
//	go run ./cmd/kinesis-soak -duration 10m -consumers 2 -producers 4 -rate 200 -proxy
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/consumerproc"
)

// config is the command line.
type config struct {
	duration     time.Duration
	maxRecords   int
	consumers    int
	producers    int
	rate         int
	shards       int
	proxy        bool
	cutEvery     time.Duration
	restartEvery time.Duration
	drain        time.Duration
	reportEvery  time.Duration
	leaseDur     time.Duration
	logDir       string
}

func main() {
	if consumerproc.IsChild() {
		os.Exit(consumerproc.RunChild())
	}
	var c config
	flag.DurationVar(&c.duration, "duration", time.Minute, "how long producers run (the run ends earlier at -max-records)")
	flag.IntVar(&c.maxRecords, "max-records", 100_000, "stop producing after this many creates succeeded")
	flag.IntVar(&c.consumers, "consumers", 2, "consumer processes (at least 2), same consumerName, shared mode")
	flag.IntVar(&c.producers, "producers", 4, "concurrent Invoke callers")
	flag.IntVar(&c.rate, "rate", 200, "creates per second, all producers together")
	flag.IntVar(&c.shards, "shards", 4, "shards of the stream")
	flag.BoolVar(&c.proxy, "proxy", false, "put a fault proxy in front of Kinesis and DynamoDB")
	flag.DurationVar(&c.cutEvery, "cut-every", 30*time.Second, "with -proxy: cut every connection this often")
	flag.DurationVar(&c.restartEvery, "restart-every", 0, "restart kinesis-local, keeping its data, this often (0: never)")
	flag.DurationVar(&c.drain, "drain", 2*time.Minute, "after producing, wait at most this long for the rest to arrive")
	flag.DurationVar(&c.reportEvery, "report-every", 30*time.Second, "print progress and RSS this often")
	flag.DurationVar(&c.leaseDur, "lease-duration", 10*time.Second, "the consumers' leaseDuration")
	flag.StringVar(&c.logDir, "log-dir", "", "where the consumers' and the producer's logs go (default: a new temporary directory)")
	flag.Parse()
	if c.consumers < 2 || c.producers < 1 || c.rate < 1 || c.maxRecords < 1 || c.duration <= 0 || c.shards < 1 {
		fmt.Fprintln(os.Stderr, "kinesis-soak: need -consumers >= 2 and positive -producers, -rate, -max-records, -duration, -shards")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lost, err := run(ctx, c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kinesis-soak:", err)
		os.Exit(2)
	}
	if lost > 0 {
		os.Exit(1)
	}
}

var errInterrupted = errors.New("interrupted")
