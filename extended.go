package kinesis

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/vmware/vmware-go-kcl-v2/clientlibrary/config"

	"github.com/dapr/components-contrib/bindings"
)

// deregisterBy bounds the opt-in deregistration, counted from the start of Close: Close, the
// consumer's stop included, returns within 5 s.
const deregisterBy = 4900 * time.Millisecond

// startExtended reads the stream through enhanced fan-out. It runs shared mode's KCL worker (the same
// lease table, record processor and checkpoints: one delivery contract for both modes) with KCL's
// fan-out shard consumer, which subscribes from the checkpoint and, when a subscription ends,
// resubscribes after the continuation sequence number. subscribeGuard, on the Kinesis client KCL
// uses, makes up for what that consumer lacks (fanout.go).
func (a *AWSKinesis) startExtended(ctx context.Context, handler bindings.Handler) (io.Closer, error) {
	consumerARN, err := ensureConsumer(ctx, a.client, &a.meta, a.logger)
	if err != nil {
		return nil, err
	}
	log := a.logger.WithFields(map[string]any{"consumerARN": consumerARN})

	// The guard's lifetime ends where the consumer's stop begins (Read's ctx, or Close below): open
	// subscriptions end and no new one starts while the stop waits for the handler in flight.
	lifetime, stopGuard := context.WithCancel(ctx)
	// KCL holds a shard's lease, unrenewed, while a subscription waits for its turn: the backoff stays
	// well within the lease.
	guard := newSubscribeGuard(lifetime, log, a.meta.LeaseDuration/2)
	in, err := a.startKCL(ctx, handler, kclVariant{
		label: "Extended-mode",
		// With an ARN KCL neither describes nor registers the consumer itself.
		configure:      func(cfg *config.KinesisClientLibConfiguration) { cfg.WithEnhancedFanOutConsumerARN(consumerARN) },
		kinesisOptions: []func(*kinesis.Options){guard.kinesisOption},
	})
	if err != nil {
		stopGuard()
		return nil, err
	}
	ext := &extendedConsumer{Closer: in, stopGuard: stopGuard}
	if a.meta.DeregisterConsumerOnClose {
		ext.deregister = func(ctx context.Context) error {
			if err := deregisterConsumer(ctx, a.client, consumerARN); err != nil {
				return err
			}
			log.Infof("Deregistered stream consumer %s (deregisterConsumerOnClose)", consumerARN)
			return nil
		}
	}
	return ext, nil
}

// extendedConsumer is the KCL consumer of startKCL plus what extended mode adds to its Close.
type extendedConsumer struct {
	io.Closer
	stopGuard context.CancelFunc
	// deregister is set only with the deregisterConsumerOnClose opt-in: by default the stream consumer
	// outlives Close, as other replicas read through it.
	deregister func(context.Context) error
}

func (c *extendedConsumer) Close() error {
	began := time.Now()
	c.stopGuard()
	err := c.Closer.Close()
	if c.deregister == nil {
		return err
	}
	ctx, cancel := context.WithDeadline(context.Background(), began.Add(deregisterBy))
	defer cancel()
	return errors.Join(err, c.deregister(ctx))
}
