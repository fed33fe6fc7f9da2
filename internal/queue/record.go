package queue

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr/components-contrib/bindings"
)

// visibilityCallTimeout bounds one UpdateQueueRecordsVisibility call.
const visibilityCallTimeout = 5 * time.Second

// deliver calls the handler for one record, keeping the record invisible while the call runs, and
// then acknowledges it (success) or makes it visible again after the retry backoff (failure), or
// at once when the consumer is stopping, for another replica. It frees its handler slot.
func (c *Consumer) deliver(rec *types.QueueRecord) {
	defer func() { <-c.slots }()
	handle := aws.ToString(rec.ReceiptHandle)
	stopKeeping := c.keepInvisible(handle)
	_, err := c.cfg.Handler(c.handlerCtx, &bindings.ReadResponse{Data: rec.Data, Metadata: c.metadata(rec)})
	stopKeeping()
	if err == nil {
		c.acks.add(pendingAck{handle: handle, recordID: aws.ToString(rec.RecordId)})
		return
	}
	after := c.retryAfter(int(aws.ToInt32(rec.ReceiveCount)))
	select {
	case <-c.leaving:
		after = 0 // handed back at once: another replica may take it now
	default:
		c.cfg.Log.Debugf("Handler failed for queue record %s (receive %d), visible again in %v: %v",
			aws.ToString(rec.RecordId), aws.ToInt32(rec.ReceiveCount), after, err)
	}
	c.setVisibility(handle, aws.ToString(rec.RecordId), after)
}

// retryAfter is the backoff of a record received receiveCount times: RetryInitial doubled for
// each earlier receive, at most RetryMax, in the whole seconds the queue counts in (rounded up).
func (c *Consumer) retryAfter(receiveCount int) time.Duration {
	d := c.cfg.RetryInitial
	for i := 1; i < receiveCount && d < c.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, c.cfg.RetryMax)
	return time.Duration(math.Ceil(d.Seconds())) * time.Second
}

// keepInvisible extends the record's visibility timeout at each half of it while the handler
// runs, so that a slow call does not see its record delivered again meanwhile. The returned func
// stops it and waits for its goroutine.
func (c *Consumer) keepInvisible(handle string) (stop func()) {
	every := c.cfg.Queue.Visibility / 2
	if every <= 0 {
		return func() {}
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				c.setVisibility(handle, "", c.cfg.Queue.Visibility)
			}
		}
	})
	return func() {
		close(quit)
		wg.Wait()
	}
}

// setVisibility makes the record visible again after d (0: at once). A failure is logged: the
// record then comes back when its current visibility timeout ends, as it would have.
func (c *Consumer) setVisibility(handle, recordID string, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), visibilityCallTimeout)
	defer cancel()
	out, err := c.cfg.API.UpdateQueueRecordsVisibility(ctx, &kinesis.UpdateQueueRecordsVisibilityInput{
		QueueARN: aws.String(c.cfg.Queue.ARN),
		Entries: []types.UpdateQueueRecordsVisibilityRequestEntry{{
			ReceiptHandle: aws.String(handle), VisibilityTimeoutSeconds: aws.Int32(int32(d / time.Second)), //nolint:gosec // at most RetryMax or the queue's timeout
		}},
	})
	if err == nil && len(out.Failed) > 0 {
		f := out.Failed[0]
		c.cfg.Log.Warnf("Setting the visibility of queue record %s failed (%s: %s); it comes back when its visibility timeout ends",
			recordID, aws.ToString(f.ErrorCode), aws.ToString(f.ErrorMessage))
		return
	}
	if err != nil {
		c.cfg.Log.Warnf("Setting the visibility of queue record %s failed (kinesis:UpdateQueueRecordsVisibility); it comes back when its visibility timeout ends: %v",
			recordID, awserr.Classify(err))
	}
}
