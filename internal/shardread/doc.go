// Package shardread holds the shard readers: one polls GetRecords, one reads an enhanced fan-out
// subscription (SubscribeToShard). Each is a small state machine with one exit path that says why it
// stopped, and both hand records to the engine the same way, as batches on a channel.
package shardread

import (
	"context"
	"errors"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr/kit/logger"
)

// Batch is what one read returned.
type Batch struct {
	// Records as Kinesis returned them (KPL aggregates not yet de-aggregated: that is the delivery
	// contract's job), in sequence order.
	Records []types.Record
	// MillisBehindLatest as the read reported it (0 when it did not).
	MillisBehindLatest int64
	// End is set on the last batch of a shard read to its end (a closed shard after a reshard). Records
	// may be non-empty in it. No batch follows.
	End bool
}

// Start says where a reader begins.
type Start struct {
	// Checkpoint is the lease's: "" (none), a sequence number (read AFTER it), or "seq:sub" (read AT
	// seq; the delivery contract skips the user records already delivered).
	Checkpoint string
	// FromTrimHorizon reads a shard without checkpoint from its first record (its parents were read
	// by this application), whatever Initial says.
	FromTrimHorizon bool
	// Initial is where a shard without checkpoint starts otherwise: LATEST, TRIM_HORIZON or
	// AT_TIMESTAMP (with Timestamp).
	Initial   types.ShardIteratorType
	Timestamp time.Time
}

// ErrStopped is what Run returns when its context ended.
var ErrStopped = errors.New("shard reader stopped")

// Reader reads one shard.
type Reader interface {
	// Run reads from its Start and sends every batch on out (unbuffered: at most one batch is read
	// ahead of the delivery) until the shard ends (the End batch was sent; Run returns nil) or ctx
	// ends (Run returns an error wrapping ErrStopped). Every other failure is retried with backoff and
	// logged once per episode, with the shard: a record is never skipped.
	Run(ctx context.Context, out chan<- Batch) error
}

// PollingAPI is the part of the Kinesis API the polling reader uses.
type PollingAPI interface {
	GetShardIterator(context.Context, *kinesis.GetShardIteratorInput, ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error)
	GetRecords(context.Context, *kinesis.GetRecordsInput, ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error)
}

// PollingConfig configures a polling reader.
type PollingConfig struct {
	Client     PollingAPI
	StreamName string
	ShardID    string
	Start      Start
	// MaxRecords per GetRecords call (metadata maxRecords, at most 10,000).
	MaxRecords int
	// PollInterval is the wait after a read that found the shard caught up (MillisBehindLatest 0).
	// Reads are never closer than 200 ms apart (AWS: 5 GetRecords per second per shard).
	PollInterval time.Duration
	Log          logger.Logger
}

// FanOutAPI is the part of the Kinesis API the fan-out reader uses.
type FanOutAPI interface {
	SubscribeToShard(context.Context, *kinesis.SubscribeToShardInput, ...func(*kinesis.Options)) (*kinesis.SubscribeToShardOutput, error)
}

// FanOutConfig configures a fan-out reader.
type FanOutConfig struct {
	Client      FanOutAPI
	ConsumerARN string
	ShardID     string
	Start       Start
	Log         logger.Logger
}
