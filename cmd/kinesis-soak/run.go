package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"

	kinesisbinding "github.com/dapr-kinesis/kinesis"
	"github.com/dapr-kinesis/kinesis/internal/consumerproc"
	"github.com/dapr-kinesis/kinesis/internal/faultproxy"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

const (
	streamName   = "soak"
	consumerName = "soak"
	createWait   = 30 * time.Second
)

// run performs the soak and prints its figures; it returns the number of lost records.
func run(ctx context.Context, c config) (int, error) {
	began := time.Now()
	logDir := c.logDir
	if logDir == "" {
		var err error
		if logDir, err = os.MkdirTemp("", "kinesis-soak-"); err != nil {
			return 0, fmt.Errorf("log dir: %w", err)
		}
	}
	opts := localaws.Options{}
	if c.restartEvery > 0 {
		opts.PersistDir = logDir + "/kinesis-data"
		opts.PersistInterval = 5 * time.Second // each write serialises every record
	}
	srv, err := localaws.Start(ctx, opts)
	if err != nil {
		return 0, err
	}
	defer func() { _ = srv.Stop() }()
	if err := srv.CreateStream(ctx, srv.KinesisClient(), streamName, int32(c.shards)); err != nil {
		return 0, err
	}

	kinesisEP, dynamoEP := srv.KinesisEndpoint, srv.DynamoDBEndpoint
	var proxies []*faultproxy.Proxy
	if c.proxy {
		for _, ep := range []*string{&kinesisEP, &dynamoEP} {
			p, err := faultproxy.New(*ep)
			if err != nil {
				return 0, err
			}
			defer p.Close()
			proxies = append(proxies, p)
			*ep = p.URL()
		}
	}
	props := map[string]string{
		"streamName": streamName, "region": srv.Region,
		"endpoint": kinesisEP, "dynamoDBEndpoint": dynamoEP,
		"accessKey": localaws.AccessKeyID, "secretKey": localaws.SecretAccessKey,
	}
	inputProps := map[string]string{
		"consumerName": consumerName, "mode": "shared", "initialPosition": "TRIM_HORIZON",
		"leaseDuration": c.leaseDur.String(),
	}
	for k, v := range props {
		inputProps[k] = v
	}

	fmt.Printf("kinesis-soak: %s, up to %d records at %d/s from %d producers, %d consumers, %d shards, proxy=%v (cut every %v), restart every %v\n",
		c.duration, c.maxRecords, c.rate, c.producers, c.consumers, c.shards, c.proxy, c.cutEvery, c.restartEvery)
	fmt.Printf("kinesis-soak: logs in %s\n", logDir)

	t := newTally()
	consumers := make([]*consumerproc.Proc, 0, c.consumers)
	defer func() {
		for _, p := range consumers {
			_ = p.Stop()
		}
	}()
	for i := range c.consumers {
		name := fmt.Sprintf("consumer-%d", i+1)
		p, err := consumerproc.Start(name, inputProps, 0, logDir, func(data string, at int64) { t.delivered(name, data, at) })
		if err != nil {
			return 0, err
		}
		consumers = append(consumers, p)
	}
	readyCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, p := range consumers {
		if err := p.WaitReady(readyCtx); err != nil {
			return 0, err
		}
	}

	out := kinesisbinding.NewAWSKinesis(quietLogger("soak-producer", logDir))
	if err := out.Init(ctx, bindings.Metadata{Base: metadata.Base{Properties: props}}); err != nil {
		return 0, err
	}
	defer out.Close()

	var faults sync.WaitGroup
	faultCtx, stopFaults := context.WithCancel(ctx)
	defer stopFaults()
	var cuts, restarts atomic.Int64
	if c.proxy {
		faults.Add(1)
		go func() { defer faults.Done(); every(faultCtx, c.cutEvery, func() { cutAll(proxies, &cuts) }) }()
	}
	if c.restartEvery > 0 {
		faults.Add(1)
		go func() {
			defer faults.Done()
			every(faultCtx, c.restartEvery, func() {
				if err := srv.RestartKinesis(faultCtx); err != nil && faultCtx.Err() == nil {
					fmt.Println("kinesis-soak: restart failed:", err)
					return
				}
				restarts.Add(1)
			})
		}()
	}

	var rss rssSeries
	report := func(phase string) {
		sent, failed, received := t.counts()
		var parts []string
		for _, p := range consumers {
			if kib, err := consumerproc.RSSKiB(p.PID()); err == nil {
				rss.add(p.Name(), kib)
				parts = append(parts, fmt.Sprintf("%s %s", p.Name(), mib(kib)))
			}
		}
		fmt.Printf("[%6s] %-8s sent %d, failed %d, received %d distinct; RSS %s\n",
			time.Since(began).Round(time.Second), phase, sent, failed, received, strings.Join(parts, ", "))
	}
	reportCtx, stopReports := context.WithCancel(ctx)
	var reports sync.WaitGroup
	reports.Add(1)
	phase := atomic.Value{}
	phase.Store("produce")
	go func() {
		defer reports.Done()
		every(reportCtx, c.reportEvery, func() { report(phase.Load().(string)) })
	}()

	produce(ctx, c, out, t)
	phase.Store("drain")
	stopFaults()
	faults.Wait()
	drainUntil := time.Now().Add(c.drain)
	for t.outstanding() > 0 && time.Now().Before(drainUntil) && ctx.Err() == nil {
		time.Sleep(200 * time.Millisecond)
	}
	stopReports()
	reports.Wait()
	report("end")

	var stopErrs []error
	for _, p := range consumers {
		stopErrs = append(stopErrs, p.Stop())
	}
	consumers = nil

	fmt.Println()
	fmt.Printf("ran %v (producing %v); connection cuts %d, kinesis-local restarts %d\n",
		time.Since(began).Round(time.Second), c.duration, cuts.Load(), restarts.Load())
	s := t.summarize()
	s.print(os.Stdout)
	rss.print(os.Stdout)
	if err := errors.Join(stopErrs...); err != nil {
		fmt.Println("consumers stopping:", err)
	}
	if ctx.Err() != nil {
		return s.lost, errInterrupted
	}
	return s.lost, nil
}

// produce runs the producers at the configured rate until the duration or the record count is
// reached.
func produce(ctx context.Context, c config, out bindings.OutputBinding, t *tally) {
	ctx, cancel := context.WithTimeout(ctx, c.duration)
	defer cancel()
	tokens := make(chan int64)
	go func() {
		defer close(tokens)
		interval := time.Second / time.Duration(c.rate)
		ticker := time.NewTicker(max(interval, time.Millisecond))
		defer ticker.Stop()
		perTick := max(1, int(time.Millisecond/interval)) // rates above 1000/s
		var next int64
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			for range perTick {
				if sent, _, _ := t.counts(); sent >= c.maxRecords {
					return
				}
				select {
				case tokens <- next:
					next++
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for range c.producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range tokens {
				// The run's end must not cancel a create in flight: its outcome would be unknown.
				callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), createWait)
				_, err := out.Invoke(callCtx, &bindings.InvokeRequest{
					Operation: bindings.CreateOperation,
					Data:      []byte(recordData(id, time.Now())),
					Metadata:  map[string]string{"partitionKey": fmt.Sprintf("key-%d", id%64)},
				})
				cancel()
				t.putResult(id, err)
			}
		}()
	}
	wg.Wait()
}

func cutAll(proxies []*faultproxy.Proxy, cuts *atomic.Int64) {
	for _, p := range proxies {
		cuts.Add(int64(p.CutAll()))
	}
}

// every calls fn each interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			fn()
		}
	}
}

// quietLogger writes the producer's logs to a file in the log directory, keeping stdout for figures.
func quietLogger(name, dir string) logger.Logger {
	log := logger.NewLogger(name)
	if f, err := os.Create(dir + "/" + name + ".log"); err == nil {
		log.SetOutput(f) // closed at exit
	}
	return log
}
