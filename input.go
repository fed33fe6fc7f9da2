package kinesis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/google/uuid"

	"github.com/dapr-kinesis/kinesis/internal/deadletter"
	"github.com/dapr-kinesis/kinesis/internal/delivery"
	"github.com/dapr-kinesis/kinesis/internal/engine"
	"github.com/dapr-kinesis/kinesis/internal/leases"
	"github.com/dapr-kinesis/kinesis/internal/shardread"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/kit/logger"
)

// ReadResponse.Metadata keys set on every delivered record (see internal/delivery).
const (
	readShardID           = delivery.MetaShardID
	readSequenceNumber    = delivery.MetaSequenceNumber
	readSubSequenceNumber = delivery.MetaSubSequenceNumber
	readPartitionKey      = delivery.MetaPartitionKey
	readArrivalTimestamp  = delivery.MetaArrivalTimestamp
	readStreamName        = delivery.MetaStreamName
	arrivalTimeLayout     = delivery.ArrivalTimeLayout
)

// latestSkew moves LATEST's start back, for a local clock ahead of the stream's: LATEST means "what
// is put from Read on", read AT_TIMESTAMP Read's start, not the tip when a shard's lease is taken,
// which for a shard taken over later would skip what was put meanwhile.
const latestSkew = time.Second

// deregisterBy bounds the opt-in deregistration of the stream consumer, counted from the start of
// Close: Close, the engine's stop included, returns within 5 s.
const deregisterBy = 4900 * time.Millisecond

// Read starts consuming the stream in the configured mode and returns once the consumer runs, as daprd
// expects. The consumer stops when ctx ends or on Close.
func (a *AWSKinesis) Read(ctx context.Context, handler bindings.Handler) error {
	if a.closed.Load() {
		return ErrClosed
	}
	if !a.initDone.Load() {
		return errors.New("kinesis binding error: Read before Init")
	}
	if err := a.meta.inputReady(); err != nil {
		return err
	}
	var in io.Closer
	var err error
	if a.meta.Mode == modeQueue {
		in, err = a.startQueueConsumer(ctx, handler)
	} else {
		in, err = a.startConsumer(ctx, handler)
	}
	if err != nil {
		return err
	}

	a.closeMu.Lock()
	defer a.closeMu.Unlock()
	if a.closed.Load() {
		return errors.Join(ErrClosed, in.Close())
	}
	a.inputs = append(a.inputs, in)
	return nil
}

// startConsumer starts the engine (internal/engine) with the reader of the configured mode.
func (a *AWSKinesis) startConsumer(ctx context.Context, handler bindings.Handler) (*consumer, error) {
	readStart := time.Now()
	m := &a.meta
	workerID := m.WorkerID
	if workerID == "" {
		workerID = defaultWorkerID()
	}
	log := a.logger.WithFields(map[string]any{"workerID": workerID})
	label := "Shared-mode"
	clients := a.newConsumerClients(m.Mode == modeExtended)
	settings := m.deliverySettings()
	if m.DeadLetterStream != "" {
		dead := deadletter.New(clients.kinesis, m.DeadLetterStream, m.StreamName)
		if err := dead.Check(ctx); err != nil {
			clients.closeIdle()
			return nil, fmt.Errorf("kinesis binding error: 'deadLetterStream': %w", err)
		}
		settings.DeadLetters = dead
	}
	c := &consumer{log: log, closeIdle: clients.closeIdle, closing: make(chan struct{}), watchDone: make(chan struct{})}

	initial := m.startPosition(readStart)
	newReader := func(s leases.Shard) shardread.Reader {
		return shardread.NewPolling(shardread.PollingConfig{
			Client: clients.kinesis, StreamName: m.StreamName, ShardID: s.ID, Start: initial(s),
			MaxRecords: m.MaxRecords, PollInterval: m.PollInterval, Log: log,
		})
	}
	if m.Mode == modeExtended {
		label = "Extended-mode"
		consumerARN, err := ensureConsumer(ctx, clients.kinesis, m, log)
		if err != nil {
			clients.closeIdle()
			return nil, err
		}
		log = log.WithFields(map[string]any{"consumerARN": consumerARN})
		c.log = log
		newReader = func(s leases.Shard) shardread.Reader {
			return shardread.NewFanOut(shardread.FanOutConfig{
				Client: clients.kinesis, ConsumerARN: consumerARN, ShardID: s.ID, Start: initial(s), Log: log,
			})
		}
		if m.DeregisterConsumerOnClose {
			c.deregister = func(ctx context.Context) error {
				if err := deregisterConsumer(ctx, clients.kinesis, consumerARN); err != nil {
					return err
				}
				log.Infof("Deregistered stream consumer %s (deregisterConsumerOnClose)", consumerARN)
				return nil
			}
		}
	}

	eng, err := engine.Start(ctx, engine.Config{
		Leases: leases.Config{
			DB:            clients.dynamoDB,
			Kinesis:       clients.kinesis,
			Table:         m.leaseTable(),
			Stream:        m.StreamName,
			WorkerID:      workerID,
			LeaseDuration: m.LeaseDuration,
			PassInterval:  m.ShardSyncInterval,
			LeaseStealing: m.LeaseStealing,
			Protocol:      m.LeaseProtocol,
			Wall:          a.wallClock,
			Log:           log,
		},
		NewReader:       newReader,
		Handler:         handler,
		HandlerContext:  ctx,
		Delivery:        settings,
		LagWarning:      m.LagWarningThreshold,
		CheckpointEvery: m.CheckpointInterval,
		Log:             log,
	})
	if err != nil {
		clients.closeIdle()
		return nil, fmt.Errorf("kinesis binding error: starting the %s consumer: %w", label, err)
	}
	c.engine = eng
	log.Infof("%s consumer started on stream %s (lease table %s)", label, m.StreamName, m.leaseTable())
	go c.watch(ctx)
	return c, nil
}

// startPosition returns where a shard without a checkpoint starts.
func (m *kinesisMetadata) startPosition(readStart time.Time) func(leases.Shard) shardread.Start {
	start := shardread.Start{Initial: types.ShardIteratorType(m.InitialPosition)}
	switch m.InitialPosition {
	case positionAtTimestamp:
		start.Timestamp = m.initialTimestamp
	case positionLatest:
		start.Initial = types.ShardIteratorTypeAtTimestamp
		start.Timestamp = readStart.Add(-latestSkew)
	}
	return func(s leases.Shard) shardread.Start {
		st := start
		st.Checkpoint = s.Checkpoint
		st.FromTrimHorizon = s.ContinuesLineage
		return st
	}
}

func (m *kinesisMetadata) deliverySettings() delivery.Settings {
	return delivery.Settings{
		StreamName:   m.StreamName,
		RetryInitial: m.RetryInitialInterval,
		RetryMax:     m.RetryMaxInterval,
		MaxAttempts:  m.MaxDeliveryAttempts,
		Concurrency:  m.ConcurrencyPerShard,
		MaxAge:       m.MaxRecordAge,
	}
}

// defaultWorkerID is unique per binding instance: the host name (the pod name on Kubernetes) helps an
// operator read the lease table, the random suffix keeps two instances on one host apart.
func defaultWorkerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "worker"
	}
	return host + "-" + uuid.NewString()[:8]
}

// consumer is a running input: the engine plus what the binding adds around it.
type consumer struct {
	log       logger.Logger
	engine    *engine.Engine
	closeIdle func()
	// deregister is set only with the deregisterConsumerOnClose opt-in: by default the stream consumer
	// outlives Close, as other replicas read through it.
	deregister func(context.Context) error

	stopOnce  sync.Once
	stopErr   error
	closeOnce sync.Once
	closing   chan struct{} // closed by Close; ends the watcher
	watchDone chan struct{}
}

// watch stops the consumer when Read's context ends; daprd ends it at shutdown.
func (c *consumer) watch(ctx context.Context) {
	defer close(c.watchDone)
	select {
	case <-ctx.Done():
		if err := c.stop(); err != nil {
			c.log.Warnf("Consumer stopped with errors: %v", err)
		}
	case <-c.closing:
	}
}

// Close stops the consumer within 5 s and returns the stop's errors, unless the end of Read's context
// stopped it first (they were logged then).
func (c *consumer) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
	err := c.stop()
	<-c.watchDone
	return err
}

func (c *consumer) stop() error {
	var first bool
	c.stopOnce.Do(func() {
		first = true
		began := time.Now()
		err := c.engine.Close()
		if c.deregister != nil {
			ctx, cancel := context.WithDeadline(context.Background(), began.Add(deregisterBy))
			err = errors.Join(err, c.deregister(ctx))
			cancel()
		}
		c.closeIdle()
		c.stopErr = err
	})
	if !first {
		return nil
	}
	return c.stopErr
}

// consumerClients are the SDK clients of one input consumer: the binding's (credentials, endpoints,
// retry policy, test seam) on a connection pool of their own, closed when the consumer stops so that
// no idle connection outlives it.
type consumerClients struct {
	kinesis   *kinesis.Client
	dynamoDB  *dynamodb.Client
	closeIdle func()
}

func (a *AWSKinesis) newConsumerClients(fanOut bool) consumerClients {
	httpClient, closeIdle := ownConnectionPool(a.client.Options().HTTPClient)
	kinesisOpts := []func(*kinesis.Options){a.kinesisOptions, func(o *kinesis.Options) {
		o.HTTPClient = httpClient
		o.APIOptions = append(o.APIOptions, boundRequests(consumerKinesisTimeout))
	}}
	if fanOut {
		kinesisOpts = append(kinesisOpts, shardread.PerStreamCodec)
	}
	return consumerClients{
		kinesis: kinesis.NewFromConfig(a.awsCfg, kinesisOpts...),
		dynamoDB: dynamodb.NewFromConfig(a.awsCfg, a.dynamoDBOptions, func(o *dynamodb.Options) {
			o.HTTPClient = httpClient
			o.APIOptions = append(o.APIOptions, boundRequests(max(a.meta.LeaseDuration/2, minLeaseRequestTimeout)))
		}),
		closeIdle: closeIdle,
	}
}
