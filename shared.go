package kinesis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/google/uuid"
	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	"github.com/vmware/vmware-go-kcl-v2/clientlibrary/config"
	"github.com/vmware/vmware-go-kcl-v2/clientlibrary/worker"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/kit/logger"
)

// Timing of the KCL consumers that is not metadata.
const (
	// closeTimeout bounds Close (the contract is 5 s; the rest is margin for a loaded machine).
	closeTimeout = 4500 * time.Millisecond
	// handlerGrace is how long a handler call in flight when Close starts may run before its context
	// is cancelled. A call that completes within it is checkpointed.
	handlerGrace = 3 * time.Second
	// abortAfter is when the KCL requests still running are cancelled: KCL starts them without a
	// context and would otherwise wait for them.
	abortAfter = 3500 * time.Millisecond
	// workerStopWait is how long Close waits for KCL's worker before releasing the leases itself.
	// Worker.Shutdown can block for ever: a child shard waiting for its parent ignores the stop.
	workerStopWait = 4 * time.Second

	// latestSkew moves LATEST's start back, for clocks behind the stream's (see kclConfig).
	latestSkew = time.Second
	// parentPollInterval is how often a child shard checks whether its parents are finished (KCL's
	// default, 10 s, would add up to that to every reshard).
	parentPollInterval = 500 * time.Millisecond
	// minLeaseScanInterval bounds how often each replica scans the lease table for balancing.
	minLeaseScanInterval = time.Second
)

// startShared starts a KCL polling worker on the stream and returns once it runs.
func (a *AWSKinesis) startShared(ctx context.Context, handler bindings.Handler) (io.Closer, error) {
	return a.startKCL(ctx, handler, kclVariant{label: "Shared-mode"})
}

// kclVariant is what distinguishes the KCL workers the input modes run; both share the lease table,
// the record processor (processor.go), the KCL-facing clients (kclclient.go) and the lifecycle here.
type kclVariant struct {
	label string // starts log lines: "Shared-mode consumer started"
	// configure adjusts KCL's configuration, e.g. WithEnhancedFanOutConsumerARN.
	configure func(*config.KinesisClientLibConfiguration)
	// kinesisOptions are applied last to the Kinesis client KCL uses.
	kinesisOptions []func(*kinesis.Options)
}

// startKCL starts a KCL worker on the stream and returns once it runs. The lease table is created
// first if missing.
func (a *AWSKinesis) startKCL(ctx context.Context, handler bindings.Handler, v kclVariant) (io.Closer, error) {
	readStart := time.Now()
	m := &a.meta
	workerID := m.WorkerID
	if workerID == "" {
		workerID = defaultWorkerID()
	}
	table := m.leaseTable()
	log := a.logger.WithFields(map[string]any{"workerID": workerID})

	abortCtx, abort := context.WithCancel(context.Background())
	lineage := newShardLineage(nil, m.StreamName, nil)
	clients := a.newConsumerClients(abortCtx, lineage, log, v.kinesisOptions...)
	fail := func(err error) (io.Closer, error) {
		abort()
		clients.closeIdle()
		return nil, err
	}

	if err := ensureLeaseTable(ctx, clients.dynamoDB, table, log); err != nil {
		return fail(err)
	}
	checkpointed, err := checkpointedShards(ctx, clients.dynamoDB, table)
	if err != nil {
		return fail(err)
	}
	lineage.checkpointedAtStart = checkpointed

	cfg := m.kclConfig(a.awsCfg.Region, workerID, readStart, log)
	if v.configure != nil {
		v.configure(cfg)
	}
	leases := &leaseStore{
		kclStore:     chk.NewDynamoCheckpoint(cfg).WithDynamoDB(clients.kclDynamoDB),
		db:           clients.dynamoDB,
		table:        table,
		workerID:     workerID,
		lineage:      lineage,
		log:          log,
		abortCtx:     abortCtx,
		parentPoll:   parentPollInterval,
		scanEvery:    max(m.ShardSyncInterval, minLeaseScanInterval),
		claimTimeout: time.Duration(cfg.LeaseStealingClaimTimeoutMillis) * time.Millisecond,
		held:         map[string]struct{}{},
		claimed:      map[string]time.Time{},
	}
	d := newDelivery(ctx, handler, log, m.deliverySettings(), leases)
	w := worker.NewWorker(d, cfg).WithKinesis(clients.kinesis).WithCheckpointer(leases)

	unregisterLog := registerGlobalKCLLog(workerID, log)
	if err := w.Start(); err != nil {
		unregisterLog()
		d.stop()
		d.stopHandlers()
		return fail(fmt.Errorf("kinesis binding error: starting the %s consumer: %w", strings.ToLower(v.label), err))
	}
	log.Infof("%s consumer started on stream %s (lease table %s)", v.label, m.StreamName, table)

	c := &kclConsumer{
		label:         v.label,
		log:           log,
		worker:        w,
		delivery:      d,
		leases:        leases,
		abort:         abort,
		closeIdle:     clients.closeIdle,
		unregisterLog: unregisterLog,
		closing:       make(chan struct{}),
		watchDone:     make(chan struct{}),
	}
	go c.watch(ctx)
	return c, nil
}

// kclConfig maps the metadata onto KCL's configuration.
func (m *kinesisMetadata) kclConfig(region, workerID string, readStart time.Time, log logger.Logger) *config.KinesisClientLibConfiguration {
	cfg := config.NewKinesisClientLibConfig(m.ConsumerName, m.StreamName, region, workerID).
		WithTableName(m.leaseTable()).
		WithFailoverTimeMillis(millis(m.LeaseDuration)).
		// Renew a third into the lease (polling consumer) and halfway through it (fan-out consumer,
		// which counts back from the lease's end), leaving time for a slow renewal.
		WithLeaseRefreshWaitTime(millis(m.LeaseDuration / 3)).
		WithLeaseRefreshPeriodMillis(millis(m.LeaseDuration / 2)).
		WithShardSyncIntervalMillis(millis(m.ShardSyncInterval)).
		WithLeaseSyncingIntervalMillis(millis(max(m.ShardSyncInterval, minLeaseScanInterval))).
		WithMaxRecords(m.MaxRecords).
		// KCL sleeps this long only after an empty read, and its own limiter keeps a shard under
		// AWS's 5 GetRecords calls per second; validation keeps it at 200 ms or more.
		WithIdleTimeBetweenReadsInMillis(millis(m.PollInterval)).
		WithLeaseStealing(m.LeaseStealing).
		WithLogger(kclLog{log: log})
	// A steal claim blocks the shard for everyone else until the claimant takes it; if the claimant
	// dies first, the claim expires this long after the lease did (KCL's default is 2 minutes).
	cfg.LeaseStealingClaimTimeoutMillis = millis(m.LeaseDuration)
	cfg.ParentShardPollIntervalMillis = millis(parentPollInterval)

	switch m.InitialPosition {
	case positionTrimHorizon:
		cfg.WithInitialPositionInStream(config.TRIM_HORIZON)
	case positionAtTimestamp:
		ts := m.initialTimestamp
		cfg.WithTimestampAtInitialPositionInStream(&ts)
	default:
		// LATEST means "what is put from now on". KCL's LATEST is the tip when a shard's lease is
		// taken, and it takes one lease per shard sync, so records put between Read and that
		// moment would be skipped. Reading from Read's start time (less latestSkew, for a local
		// clock ahead of AWS's) delivers them. It applies only where no checkpoint exists.
		ts := readStart.Add(-latestSkew)
		cfg.WithTimestampAtInitialPositionInStream(&ts)
	}
	return cfg
}

func millis(d time.Duration) int {
	return max(int(d.Milliseconds()), 1)
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

// checkpointedShards lists the shards that have a checkpoint in the lease table.
func checkpointedShards(ctx context.Context, db *dynamodb.Client, table string) (map[string]bool, error) {
	items, err := scanLeases(ctx, db, table)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, item := range items {
		id, _ := attrString(item, chk.LeaseKeyKey)
		if cp, ok := attrString(item, chk.SequenceNumberKey); ok && cp != "" {
			out[id] = true
		}
	}
	return out, nil
}

// kclConsumer is a running KCL input. It stops when Read's context ends or on Close.
type kclConsumer struct {
	label         string
	log           logger.Logger
	worker        *worker.Worker
	delivery      *delivery
	leases        *leaseStore
	abort         context.CancelFunc
	closeIdle     func()
	unregisterLog func()

	stopOnce  sync.Once
	closeOnce sync.Once
	closing   chan struct{} // closed by Close; ends the watcher
	watchDone chan struct{}
}

func (c *kclConsumer) watch(ctx context.Context) {
	defer close(c.watchDone)
	select {
	case <-ctx.Done():
		if err := c.stop(); err != nil {
			c.log.Warnf("%s consumer stopped with errors: %v", c.label, err)
		}
	case <-c.closing:
	}
}

// Close stops the consumer (see shutdown). It returns within closeTimeout, and returns the stop's
// errors unless the end of Read's context stopped the consumer first (they were logged then).
func (c *kclConsumer) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
	err := c.stop()
	<-c.watchDone
	return err
}

// stop runs shutdown once; only its first caller gets the result, later callers wait for it.
func (c *kclConsumer) stop() error {
	var err error
	c.stopOnce.Do(func() { err = c.shutdown() })
	return err
}

// shutdown stops the consumer within closeTimeout:
//  1. no record is delivered any more; KCL can take or renew no lease, and its waits end;
//  2. KCL's worker is asked to stop: each shard consumer finishes its read and the processor's
//     batch, which checkpoints what completed, and KCL releases the shard's lease;
//  3. a handler call still running after handlerGrace gets its context cancelled; KCL requests still
//     running after abortAfter are cancelled;
//  4. leases KCL has not released by workerStopWait are released here, so other replicas can take
//     the shards at their next shard sync.
func (c *kclConsumer) shutdown() error {
	began := time.Now()
	c.delivery.stop()
	c.leases.beginStop()
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		c.worker.Shutdown()
	}()

	var errs []error
	if !waitUntil(workerDone, began.Add(handlerGrace)) {
		c.delivery.stopHandlers()
		if !waitUntil(workerDone, began.Add(abortAfter)) {
			c.abort()
			if !waitUntil(workerDone, began.Add(workerStopWait)) {
				errs = append(errs, fmt.Errorf("kinesis binding error: the KCL worker did not stop within %v (a handler call ignoring its context, or a KCL wait); its leases are released anyway", workerStopWait))
			}
		}
	}
	releaseCtx, cancel := context.WithDeadline(context.Background(), began.Add(closeTimeout))
	if err := c.leases.release(releaseCtx); err != nil {
		errs = append(errs, err)
	}
	cancel()

	c.delivery.stopHandlers()
	c.abort()
	c.unregisterLog()
	c.closeIdle()
	c.log.Infof("%s consumer stopped in %v", c.label, time.Since(began).Round(time.Millisecond))
	return errors.Join(errs...)
}

// waitUntil waits for done until the deadline; it reports whether done was closed.
func waitUntil(done <-chan struct{}, deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
