package queue

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/backoff"
	"github.com/dapr-kinesis/kinesis/internal/episode"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/kit/logger"
)

const (
	// maxReceive is the most records one ReceiveQueueRecords returns (AWS's limit).
	maxReceive = 10
	// longPoll is how long a receive waits for a record when none is visible (AWS allows 20 s).
	longPoll = 10 * time.Second
	// receiveRetryFirst and receiveRetryMax bound the backoff of a receive that failed.
	receiveRetryFirst = 200 * time.Millisecond
	receiveRetryMax   = 5 * time.Second
	// maxPollers bounds the long polls in flight at once: enough to keep the handler slots filled.
	maxPollers = 8
	// slotGather is how long a poller waits for more free handler slots before it receives.
	slotGather = 5 * time.Millisecond
	// DefaultCloseGrace is how long Stop lets handler calls in flight finish.
	DefaultCloseGrace = 4 * time.Second
)

// receiving names the pollers' calls in the log.
const receiving = "Receiving from the queue"

// Config is what a Consumer needs.
type Config struct {
	API   API
	Queue Queue
	// Stream is the stream's name, for the read metadata.
	Stream string
	// Concurrency is how many handler calls run at once, and so how many records a replica holds.
	Concurrency int
	// RetryInitial and RetryMax bound the backoff of a failed record: it is visible again after
	// RetryInitial doubled for each earlier receive, at most RetryMax.
	RetryInitial, RetryMax time.Duration
	Handler                bindings.Handler
	CloseGrace             time.Duration // 0: DefaultCloseGrace
	Log                    logger.Logger
}

// Consumer receives a queue's records and calls the handler for each. Start it with Run; Stop
// ends it.
type Consumer struct {
	cfg Config

	slots    chan struct{} // one per handler call that may run; a poller takes them before receiving
	acks     *acker
	handlers sync.WaitGroup
	// handlerCtx ends the handler calls still running when Stop's grace period is over.
	handlerCtx    context.Context //nolint:containedctx // lifetime of the handler calls
	cancelHandler context.CancelFunc
	stopping      chan struct{} // closed by Stop: no record is received from then on
	stopOnce      sync.Once
	leaving       chan struct{} // closed once no more records are received, for whatever reason
	done          chan struct{} // closed when Run has returned
	// failures is the receive failures of all the pollers, logged as one episode.
	failures *episode.Episode
}

// New returns a Consumer; nothing runs until Run.
func New(cfg Config) *Consumer {
	if cfg.CloseGrace <= 0 {
		cfg.CloseGrace = DefaultCloseGrace
	}
	cfg.Concurrency = max(cfg.Concurrency, 1)
	c := &Consumer{
		cfg:      cfg,
		slots:    make(chan struct{}, cfg.Concurrency),
		stopping: make(chan struct{}),
		leaving:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	c.handlerCtx, c.cancelHandler = context.WithCancel(context.Background())
	c.acks = newAcker(cfg.API, cfg.Queue.ARN, cfg.Log)
	c.failures = episode.New(cfg.Log, awserr.PermissionRead)
	return c
}

// Run receives and delivers until ctx ends or Stop is called, then hands back what it holds (see
// Stop) and returns. Its pollers, the handler calls and the acknowledger are its goroutines; none
// outlives it.
func (c *Consumer) Run(ctx context.Context) {
	defer close(c.done)
	receiveCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.stopping:
		case <-receiveCtx.Done():
		}
		cancel()
	}()
	go c.acks.run()

	// At least two, so that one receives while the other waits for the slots that calls free.
	pollers := min(maxPollers, max(2, (c.cfg.Concurrency+maxReceive-1)/maxReceive))
	var polls sync.WaitGroup
	for range pollers {
		polls.Go(func() { c.poll(receiveCtx) })
	}
	c.cfg.Log.Infof("Queue consumer started on queue %s (%d handler calls at once, visibility timeout %v)",
		c.cfg.Queue.ARN, c.cfg.Concurrency, c.cfg.Queue.Visibility)
	polls.Wait()

	close(c.leaving)
	c.drainHandlers()
	c.acks.stop()
	c.cfg.Log.Infof("Queue consumer stopped: %s", stopReason(ctx))
}

func stopReason(ctx context.Context) string {
	if ctx.Err() != nil {
		return "its context ended"
	}
	return "the binding is closing"
}

// Stop ends Run: no more receives; handler calls in flight get the grace period to finish, then
// their context ends; records not acknowledged are made visible at once for other replicas, and
// the acknowledgements gathered are sent. It returns once Run has returned or ctx ended.
func (c *Consumer) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() { close(c.stopping) })
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kinesis binding error: queue consumer did not stop in time: %w", ctx.Err())
	}
}

// drainHandlers waits for the handler calls, ending their context once the grace period is over.
func (c *Consumer) drainHandlers() {
	finished := make(chan struct{})
	go func() {
		c.handlers.Wait()
		close(finished)
	}()
	grace := time.NewTimer(c.cfg.CloseGrace)
	defer grace.Stop()
	select {
	case <-finished:
	case <-grace.C:
		c.cancelHandler()
		<-finished
	}
	c.cancelHandler()
}

// poll is one long-poll loop: it takes the free handler slots (at least one, at most a receive's
// worth), receives at most that many records, starts a handler call for each and gives back the
// slots it did not use. So a replica never holds more records than it can run.
func (c *Consumer) poll(ctx context.Context) {
	retry := backoff.Exponential{Initial: receiveRetryFirst, Max: receiveRetryMax}
	for {
		n, ok := c.takeSlots(ctx)
		if !ok {
			return
		}
		recs, err := c.receive(ctx, n)
		for range n - len(recs) {
			<-c.slots
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.failures.Failed(receiving, err, awserr.OperatorMustAct(err))
			if !backoff.Sleep(ctx, retry.Next()) {
				return
			}
			continue
		}
		c.failures.Recovered(receiving)
		retry = backoff.Exponential{Initial: receiveRetryFirst, Max: receiveRetryMax}
		for i := range recs {
			c.handlers.Go(func() { c.deliver(&recs[i]) })
		}
	}
}

// takeSlots blocks until one handler slot is free, then takes as many more as are free, up to a
// receive's worth; while it has fewer than half the slots (or a receive's worth), it waits up to
// slotGather for calls to end. So receives carry several records at once instead of one each:
// every receive is a request, and they would cost more than the records on a busy replica.
func (c *Consumer) takeSlots(ctx context.Context) (int, bool) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return 0, false
	}
	want := min(maxReceive, (c.cfg.Concurrency+1)/2)
	n := 1
	var gather <-chan time.Time
	for n < maxReceive {
		select {
		case c.slots <- struct{}{}:
			n++
			continue
		default:
		}
		if n >= want {
			return n, true
		}
		if gather == nil {
			timer := time.NewTimer(slotGather)
			defer timer.Stop()
			gather = timer.C
		}
		select {
		case c.slots <- struct{}{}:
			n++
		case <-gather:
			return n, true
		case <-ctx.Done():
			return n, true // the receive that follows fails at once; the slots are given back
		}
	}
	return n, true
}

func (c *Consumer) receive(ctx context.Context, n int) ([]types.QueueRecord, error) {
	out, err := c.cfg.API.ReceiveQueueRecords(ctx, &kinesis.ReceiveQueueRecordsInput{
		QueueARN:        aws.String(c.cfg.Queue.ARN),
		Limit:           aws.Int32(int32(n)), //nolint:gosec // at most maxReceive
		WaitTimeSeconds: aws.Int32(int32(longPoll / time.Second)),
	})
	if err != nil {
		return nil, fmt.Errorf("kinesis binding error: receiving from queue %s (kinesis:ReceiveQueueRecords): %w", c.cfg.Queue.ARN, awserr.Classify(err))
	}
	if len(out.QueueRecords) > n {
		// Never more calls than slots: the extra records stay hidden until their visibility timeout
		// ends, and then come back, to this replica or another.
		c.cfg.Log.Warnf("ReceiveQueueRecords answered %d records for a Limit of %d; the rest come back after the visibility timeout", len(out.QueueRecords), n)
		return out.QueueRecords[:n], nil
	}
	return out.QueueRecords, nil
}
