package queue

import (
	"context"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr/kit/logger"
)

const (
	// ackLinger is the longest an acknowledgement waits for others to share its call.
	ackLinger = 5 * time.Millisecond
	// ackCallTimeout bounds one AcknowledgeQueueRecords call.
	ackCallTimeout = 5 * time.Second
)

type pendingAck struct {
	handle, recordID string
}

// acker gathers acknowledgements into AcknowledgeQueueRecords calls of up to 10, each sent once it
// is full or its first entry has waited ackLinger. One goroutine, run, owns the batch. A record
// counts as done only once its acknowledgement succeeded; one that failed is logged with its id and
// may be delivered again (at-least-once, as AWS says of queues).
type acker struct {
	api   API
	queue string
	log   logger.Logger
	in    chan pendingAck
	done  chan struct{}
}

func newAcker(api API, queue string, log logger.Logger) *acker {
	return &acker{api: api, queue: queue, log: log, in: make(chan pendingAck, maxReceive), done: make(chan struct{})}
}

func (a *acker) add(p pendingAck) { a.in <- p }

// stop sends what is gathered and waits for run to return; no add may follow.
func (a *acker) stop() {
	close(a.in)
	<-a.done
}

func (a *acker) run() {
	defer close(a.done)
	batch := make([]pendingAck, 0, maxReceive)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	defer linger.Stop()
	for {
		select {
		case p, ok := <-a.in:
			if !ok {
				a.send(batch)
				return
			}
			if len(batch) == 0 {
				linger.Reset(ackLinger)
			}
			batch = append(batch, p)
			if len(batch) < maxReceive {
				continue
			}
		case <-linger.C:
		}
		linger.Stop()
		a.send(batch)
		batch = batch[:0]
	}
}

func (a *acker) send(batch []pendingAck) {
	if len(batch) == 0 {
		return
	}
	entries := make([]types.AcknowledgeQueueRecordsRequestEntry, len(batch))
	ids := make(map[string]string, len(batch))
	for i, p := range batch {
		entries[i] = types.AcknowledgeQueueRecordsRequestEntry{ReceiptHandle: aws.String(p.handle)}
		ids[p.handle] = p.recordID
	}
	ctx, cancel := context.WithTimeout(context.Background(), ackCallTimeout)
	defer cancel()
	out, err := a.api.AcknowledgeQueueRecords(ctx, &kinesis.AcknowledgeQueueRecordsInput{QueueARN: aws.String(a.queue), Entries: entries})
	if err != nil {
		a.log.Warnf("Acknowledging %d queue records failed (kinesis:AcknowledgeQueueRecords); they may be delivered again: %v", len(batch), awserr.Classify(err))
		return
	}
	for _, f := range out.Failed {
		a.log.Warnf("Acknowledging queue record %s failed (%s: %s); it may be delivered again",
			ids[aws.ToString(f.ReceiptHandle)], aws.ToString(f.ErrorCode), aws.ToString(f.ErrorMessage))
	}
}
