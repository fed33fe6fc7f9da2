package kinesis

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/queue"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/kit/logger"
)

// ReadResponse.Metadata keys of queue mode (see internal/queue); partitionKey, streamName and
// approximateArrivalTimestamp are the other modes' keys.
const (
	queueMetaRecordID              = queue.MetaRecordID
	queueMetaReceiveCount          = queue.MetaReceiveCount
	queueMetaFirstReceiveTimestamp = queue.MetaFirstReceiveTimestamp
	queueMetaQueueARN              = queue.MetaQueueARN
)

// queueCloseBy bounds Close of a queue consumer: the handler calls' grace, handing records back and
// the last acknowledgements, and the opt-in queue deletion, all within 5 s.
const queueCloseBy = 4900 * time.Millisecond

// startQueueConsumer starts mode queue (internal/queue): the queue is found or created, and a
// consumer receives from it. No lease table is touched.
func (a *AWSKinesis) startQueueConsumer(ctx context.Context, handler bindings.Handler) (*queueConsumer, error) {
	m := &a.meta
	clients := a.newConsumerClients(false)
	log := a.logger.WithFields(map[string]any{"queueName": m.queueName()})
	q, err := queue.Ensure(ctx, clients.kinesis, queue.Spec{
		ARN: m.QueueARN, Name: m.queueName(), Stream: m.StreamName, Start: m.queueStart(time.Now()),
		Visibility: m.QueueVisibilityTimeout, MaxReceiveCount: m.MaxDeliveryAttempts,
	}, log)
	if err != nil {
		clients.closeIdle()
		return nil, err
	}
	log = log.WithFields(map[string]any{"queueARN": q.ARN})
	if !q.Created {
		// The queue's own settings rule; say which, since the metadata may have asked otherwise.
		log.Infof("Reading existing queue %s: visibility timeout %v, %s", q.ARN, q.Visibility, deadLetterPolicy(q.MaxReceiveCount))
	}
	c := queue.New(queue.Config{
		API: clients.kinesis, Queue: q, Stream: m.StreamName, Concurrency: m.QueueConcurrency,
		RetryInitial: m.RetryInitialInterval, RetryMax: m.RetryMaxInterval, Handler: handler, Log: log,
	})
	qc := &queueConsumer{consumer: c, closeIdle: clients.closeIdle, done: make(chan struct{}), log: log}
	if m.DeleteQueueOnClose {
		qc.deleteQueue = func(ctx context.Context) error { return queue.Delete(ctx, clients.kinesis, q.ARN) }
	}
	go func() {
		defer close(qc.done)
		c.Run(ctx)
	}()
	return qc, nil
}

func deadLetterPolicy(maxReceiveCount int) string {
	if maxReceiveCount == 0 {
		return "no dead-letter state (a record is delivered until it succeeds)"
	}
	return fmt.Sprintf("dead-letter state after %d unacknowledged receives", maxReceiveCount)
}

// queueStart is where a queue the binding creates starts reading the stream.
func (m *kinesisMetadata) queueStart(readStart time.Time) types.QueueStartingPosition {
	switch m.InitialPosition {
	case positionTrimHorizon:
		return types.QueueStartingPosition{Type: types.QueueStartingPositionTypeTrimHorizon}
	case positionAtTimestamp:
		return types.QueueStartingPosition{Type: types.QueueStartingPositionTypeAtTimestamp, Timestamp: aws.Time(m.initialTimestamp)}
	}
	// LATEST from Read's start, less the clock skew allowance, as the other modes do.
	return types.QueueStartingPosition{Type: types.QueueStartingPositionTypeAtTimestamp, Timestamp: aws.Time(readStart.Add(-latestSkew))}
}

// queueConsumer is a running queue mode consumer, closed by the binding's Close.
type queueConsumer struct {
	consumer    *queue.Consumer
	closeIdle   func()
	deleteQueue func(context.Context) error // deleteQueueOnClose
	done        chan struct{}
	log         logger.Logger
	once        sync.Once
	err         error
}

// Close stops the consumer (records not done go back to the queue at once), deletes the queue if
// asked to, and closes the connections; within 5 s, idempotent.
func (q *queueConsumer) Close() error {
	q.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), queueCloseBy)
		defer cancel()
		q.err = q.consumer.Stop(ctx)
		if q.err == nil {
			<-q.done // Stop returned because Run did
		}
		if q.deleteQueue != nil {
			if err := q.deleteQueue(ctx); err != nil {
				q.err = err
			} else {
				q.log.Infof("Deleted the queue (deleteQueueOnClose)")
			}
		}
		q.closeIdle()
	})
	return q.err
}
