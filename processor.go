package kinesis

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"

	"github.com/dapr-kinesis/kinesis/internal/backoff"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/kit/logger"
)

// ReadResponse.Metadata keys set on every delivered record.
const (
	readShardID           = "shardId"
	readSequenceNumber    = "sequenceNumber"
	readSubSequenceNumber = "subSequenceNumber" // only for user records of a KPL aggregate
	readPartitionKey      = "partitionKey"
	readArrivalTimestamp  = "approximateArrivalTimestamp"
	readStreamName        = "streamName"

	// arrivalTimeLayout is RFC 3339 with milliseconds, the precision Kinesis gives.
	arrivalTimeLayout = "2006-01-02T15:04:05.000Z07:00"
)

// defaultLeaseCheckInterval bounds how often a processor retrying a failed record asks the lease table
// whether it still owns the shard.
const defaultLeaseCheckInterval = time.Second

// leaseView is what the processor needs from the lease table: both modes share the KCL lease table.
type leaseView interface {
	// holds reports whether this worker still owns the shard's lease.
	holds(ctx context.Context, shardID string) (bool, error)
	// awaitParents returns once every parent of the shard still in the stream has been read to its
	// end, or with ctx's error.
	awaitParents(ctx context.Context, shardID string) error
}

// delivery is the delivery contract, shared by every shard processor of one consumer, whatever KCL
// worker (polling or enhanced fan-out) drives them:
//   - a shard's records reach the handler one at a time, in order;
//   - a failed record is retried, with capped exponential backoff, until it succeeds, the binding
//     stops, the lease is lost, or (if maxAttempts > 0) it has failed maxAttempts times and is skipped;
//   - the checkpoint moves, once per batch, to the last record whose handler returned nil (or that was
//     skipped), never past a record still failing;
//   - once stopping, nothing more is delivered: KCL may call ProcessRecords again before it notices
//     its own stop signal.
//
// KCL gives no context and expects no error from a processor, so delivery carries its own contexts
// and logs what it cannot return.
type delivery struct {
	handler      bindings.Handler
	log          logger.Logger
	streamName   string
	retryInitial time.Duration
	retryMax     time.Duration
	maxAttempts  int
	leases       leaseView // nil: never checked (tests of the processor alone)
	leaseCheck   time.Duration

	// stopCtx ends when the consumer stops: no delivery starts after it, and a retry wait ends.
	stopCtx context.Context //nolint:containedctx // lifecycle of the consumer, KCL passes no context
	stop    context.CancelFunc
	// handlerCtx is given to the handler. It ends some time after stopCtx, so that a handler call in
	// flight can finish and be checkpointed.
	handlerCtx   context.Context //nolint:containedctx // lifecycle of the handler calls
	stopHandlers context.CancelFunc
}

// deliverySettings are the parts of delivery that come from metadata.
type deliverySettings struct {
	streamName   string
	retryInitial time.Duration
	retryMax     time.Duration
	maxAttempts  int
}

func (m *kinesisMetadata) deliverySettings() deliverySettings {
	return deliverySettings{
		streamName:   m.StreamName,
		retryInitial: m.RetryInitialInterval,
		retryMax:     m.RetryMaxInterval,
		maxAttempts:  m.MaxDeliveryAttempts,
	}
}

// newDelivery returns the contract for one consumer. Handler calls get a context with readCtx's
// values, cancelled only by stopHandlers: readCtx ending starts a graceful stop, it does not abort
// the call in flight.
func newDelivery(readCtx context.Context, handler bindings.Handler, log logger.Logger, s deliverySettings, leases leaseView) *delivery {
	d := &delivery{
		handler:      handler,
		log:          log,
		streamName:   s.streamName,
		retryInitial: s.retryInitial,
		retryMax:     max(s.retryMax, s.retryInitial),
		maxAttempts:  s.maxAttempts,
		leases:       leases,
		leaseCheck:   defaultLeaseCheckInterval,
	}
	d.stopCtx, d.stop = context.WithCancel(context.Background())
	d.handlerCtx, d.stopHandlers = context.WithCancel(context.WithoutCancel(readCtx))
	return d
}

func (d *delivery) stopping() bool { return d.stopCtx.Err() != nil }

// CreateProcessor implements KCL's IRecordProcessorFactory: KCL creates one processor per lease it
// takes, so a processor's state lives exactly as long as this worker's tenure on the shard.
func (d *delivery) CreateProcessor() kcl.IRecordProcessor {
	return &shardProcessor{d: d, log: d.log}
}

// shardProcessor delivers the records of one shard. KCL calls it from the shard's one goroutine.
type shardProcessor struct {
	d       *delivery
	log     logger.Logger
	shardID string

	// resume, when set, is a checkpoint inside an aggregate: its user records up to resume.sub were
	// delivered before and are skipped.
	resume    position
	hasResume bool

	// halted is set once a record is left undelivered (stop or lost lease): nothing more is delivered,
	// and the shard is not marked finished.
	halted      bool
	leaseProven time.Time // last time the lease table confirmed the lease; zero before the first check
}

var _ kcl.IRecordProcessor = (*shardProcessor)(nil)

// Initialize records where the shard resumes and waits until the shard's parents have been read to
// their ends, so that parents are delivered before children. KCL itself waits only for the first
// parent, and not for a parent that has no checkpoint yet; after a merge the adjacent parent matters
// as much.
func (p *shardProcessor) Initialize(in *kcl.InitializationInput) {
	p.shardID = in.ShardId
	p.log = p.d.log.WithFields(map[string]any{readShardID: in.ShardId})
	if in.ExtendedSequenceNumber != nil {
		p.resume, p.hasResume = parseCheckpoint(aws.ToString(in.ExtendedSequenceNumber.SequenceNumber))
	}
	if p.d.leases == nil {
		return
	}
	if err := p.d.leases.awaitParents(p.d.stopCtx, p.shardID); err != nil {
		// Only a stop ends the wait early; deliver nothing of this shard in this tenure.
		p.log.Debugf("Stopped while waiting for the parent shards: %v", err)
		p.halted = true
	}
}

// ProcessRecords delivers a batch, then checkpoints the last record that completed.
func (p *shardProcessor) ProcessRecords(in *kcl.ProcessRecordsInput) {
	if p.halted || p.d.stopping() {
		p.halted = true
		return
	}
	// A lease can lapse while a shard waits for its parents (KCL renews only once reading starts):
	// make sure no other worker took the shard before delivering anything.
	if p.leaseProven.IsZero() && !p.stillOwner(true) {
		p.halted = true
		return
	}

	var (
		done    position
		doneN   int
		anyDone bool
	)
	recs := in.Records
	for i := 0; i < len(recs) && !p.halted; {
		// KCL de-aggregates a KPL record into consecutive user records that share its sequence number.
		seq := aws.ToString(recs[i].SequenceNumber)
		n := 1
		for i+n < len(recs) && aws.ToString(recs[i+n].SequenceNumber) == seq {
			n++
		}
		for sub := range n {
			pos := position{seq: seq, sub: -1}
			if n > 1 {
				pos.sub = sub
			}
			if p.hasResume && p.resume.seq == seq && sub <= p.resume.sub {
				continue
			}
			// A handler call in flight when the stop began may complete; nothing starts after it.
			if p.d.stopping() || !p.deliver(&recs[i+sub], pos) {
				p.halted = true
				break
			}
			done, doneN, anyDone = pos, n, true
		}
		p.hasResume = false // the aggregate to resume in, if any, comes first
		i += n
	}
	if anyDone {
		p.checkpoint(in.Checkpointer, done.checkpoint(doneN))
	}
}

// Shutdown marks a finished shard so that its children may start. On any other shutdown there is
// nothing to do: every batch was checkpointed as it completed.
func (p *shardProcessor) Shutdown(in *kcl.ShutdownInput) {
	if in.ShutdownReason != kcl.TERMINATE {
		p.log.Debugf("Shard processor shut down (%s)", aws.ToString(kcl.ShutdownReasonMessage(in.ShutdownReason)))
		return
	}
	if p.halted {
		// Records of this shard were left undelivered: the next owner reads them, then ends the shard.
		return
	}
	if err := in.Checkpointer.Checkpoint(nil); err != nil {
		p.logCheckpointError(err, "Could not mark the finished shard; its last records may be delivered again before its children start")
		return
	}
	p.log.Infof("Shard read to its end")
}

// deliver hands one record to the handler until it succeeds. It returns false when the record must
// be left for a later delivery: the consumer is stopping or the lease was lost.
func (p *shardProcessor) deliver(rec *types.Record, pos position) bool {
	delay := p.d.retryInitial
	for attempt := 1; ; attempt++ {
		_, err := p.d.handler(p.d.handlerCtx, &bindings.ReadResponse{Data: rec.Data, Metadata: p.metadata(rec, pos)})
		if err == nil {
			return true
		}
		log := p.log.WithFields(recordFields(pos, attempt))
		if p.d.stopping() {
			log.Debugf("Delivery interrupted by shutdown, the record will be delivered again: %v", err)
			return false
		}
		if p.d.maxAttempts > 0 && attempt >= p.d.maxAttempts {
			log.Errorf("Handler failed %d times, skipping the record: %v", attempt, err)
			return true
		}
		wait := backoff.Jitter(delay)
		log.Warnf("Handler failed, delivering the record again in %v: %v", wait, err)
		if !backoff.Sleep(p.d.stopCtx, wait) {
			log.Debugf("Retry interrupted by shutdown, the record will be delivered again")
			return false
		}
		if !p.stillOwner(false) {
			log.Infof("Lease lost while retrying, leaving the record to the shard's new owner")
			return false
		}
		delay = min(delay*2, p.d.retryMax)
	}
}

// stillOwner asks the lease table whether this worker still holds the shard, at most once per
// leaseCheck unless force is set. A failed lookup counts as owned: KCL's renewal finds out too.
func (p *shardProcessor) stillOwner(force bool) bool {
	if p.d.leases == nil || (!force && time.Since(p.leaseProven) < p.d.leaseCheck) {
		return true
	}
	held, err := p.d.leases.holds(p.d.stopCtx, p.shardID)
	if err != nil {
		p.log.Debugf("Could not check the shard's lease: %v", err)
		return true
	}
	if held {
		p.leaseProven = time.Now()
	}
	return held
}

func (p *shardProcessor) checkpoint(cp kcl.IRecordProcessorCheckpointer, at string) {
	if err := cp.Checkpoint(aws.String(at)); err != nil {
		p.logCheckpointError(err, "Checkpoint failed; records since the previous checkpoint will be delivered again if the shard changes owner")
	}
}

func (p *shardProcessor) logCheckpointError(err error, msg string) {
	switch {
	case errors.Is(err, errLeaseLost):
		// Another worker owns the shard now and delivers from the last checkpoint it can see.
		p.halted = true
		p.log.Infof("Lease lost, checkpoint not written: %v", err)
	case errors.Is(err, errConsumerStopping), errors.Is(err, context.Canceled):
		p.log.Debugf("Checkpoint not written during shutdown: %v", err)
	default:
		p.log.Warnf("%s: %v", msg, err)
	}
}

func (p *shardProcessor) metadata(rec *types.Record, pos position) map[string]string {
	md := map[string]string{
		readShardID:        p.shardID,
		readSequenceNumber: pos.seq,
		readPartitionKey:   aws.ToString(rec.PartitionKey),
		readStreamName:     p.d.streamName,
	}
	if rec.ApproximateArrivalTimestamp != nil {
		md[readArrivalTimestamp] = rec.ApproximateArrivalTimestamp.UTC().Format(arrivalTimeLayout)
	}
	if pos.sub >= 0 {
		md[readSubSequenceNumber] = strconv.Itoa(pos.sub)
	}
	return md
}

func recordFields(pos position, attempt int) map[string]any {
	f := map[string]any{readSequenceNumber: pos.seq, "attempt": attempt}
	if pos.sub >= 0 {
		f[readSubSequenceNumber] = pos.sub
	}
	return f
}
