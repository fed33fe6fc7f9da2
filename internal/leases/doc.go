// Package leases is the lease coordinator: which replica reads which shard, recorded in a DynamoDB
// lease table in the format vmware-go-kcl (and so upstream's Dapr binding) writes, plus one item of
// heartbeats.
//
// Replicas prove they are alive with one heartbeat each, not with a write per lease: the heartbeat
// item (key HeartbeatKey) holds one attribute per replica, rewritten every LeaseDuration/3, and a
// generation number bumped by every write that changes who holds or claims what (take, claim,
// handoff, release, finish, join, leave). A lease is alive while its owner's heartbeat is; a lease
// whose owner has no heartbeat (an older version of this binding, upstream's, a replica long gone)
// is alive while its own version moves on. Either way "moves on" is judged by this replica's
// monotonic clock, from when it first saw a value, never by comparing LeaseTimeout with the wall
// clock.
//
// One Coordinator per consumer replica. Run starts its heartbeats and a step every PassInterval. A
// step reads the heartbeat item (one small strongly consistent read); a full pass follows only when
// it must: on the first step, when the generation moved, when a replica's heartbeat stopped, when a
// claim, a heartbeat-less lease or a new replica's grace may have expired, when the last pass left
// something to do, and at least every fullPassMaxAge. A step also lists the stream's shards once the
// listing is shardListMaxAge old, and runs a full pass only if they changed. A full pass
//   - scans the lease table once (paginated),
//   - lists the stream's shards (ListShards, paginated) only when it must: on the first pass, when a
//     shard ended (a SHARD_END checkpoint whose children are not known yet, or Lease.Finish here),
//     and otherwise at most every shardListMaxAge; never more often than once per PassInterval,
//   - takes every free or expired lease up to this replica's fair share (ceil of leasable shards over
//     live replicas), each with a conditional write, in random order,
//   - when LeaseStealing is on and nothing is free, claims (ClaimRequest) leases from the most loaded
//     workers, as many as it needs in one pass; pending claims count for the claimant,
//   - notices claims on its own leases and asks the engine to hand them over (Lease.HandoffRequested).
//
// A child shard is leasable once each parent still listed is finished (SHARD_END); a parent no longer
// listed counts as finished.
//
// A replica whose heartbeats fail for 2/3 of LeaseDuration stops delivering every lease it holds
// (Lost() is closed at once and every later write of that Lease fails with ErrLeaseLost): the others
// judge it dead a lease duration after they first saw its last beat. A checkpoint refused by its
// ownership condition, or a pass showing another owner, loses that one lease.
//
// ProtocolRenewal also renews every held lease every LeaseDuration/3 (bumping LeaseCounter and
// LeaseTimeout) and runs a full pass every PassInterval, as this binding did before heartbeats: the
// way to share a table with replicas of an earlier version, or of upstream's binding, while an
// upgrade rolls.
package leases

import (
	"context"
	"errors"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/dapr/kit/logger"
)

// Lease table attributes. The first six are vmware-go-kcl's schema, which upstream's binding writes:
// a table it wrote is read as it is, checkpoints included.
const (
	AttrShardID    = "ShardID"       // hash key (S)
	AttrOwner      = "AssignedTo"    // worker ID (S), absent when free
	AttrTimeout    = "LeaseTimeout"  // RFC 3339 (S), written for people and older readers; never trusted
	AttrCheckpoint = "Checkpoint"    // sequence number, "seq:sub" inside an aggregate, or SHARD_END (S)
	AttrParent     = "ParentShardId" // (S), when the shard has a parent
	AttrClaim      = "ClaimRequest"  // worker ID (S) of a replica asking the owner to hand the lease over
	// AttrCounter is new with this engine: a number bumped by every take, renewal, handoff and release,
	// by which other replicas tell a live lease from a dead one without comparing clocks.
	AttrCounter = "LeaseCounter" // (N)
)

// ErrLeaseLost is returned by a write of a Lease this worker no longer holds.
var ErrLeaseLost = errors.New("lease lost: another worker holds the shard")

// DynamoDB is the part of the DynamoDB API the coordinator uses.
type DynamoDB interface {
	Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
	GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	UpdateItem(context.Context, *dynamodb.UpdateItemInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	CreateTable(context.Context, *dynamodb.CreateTableInput, ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
}

// ShardLister is the part of the Kinesis API the coordinator uses.
type ShardLister interface {
	ListShards(context.Context, *kinesis.ListShardsInput, ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
}

// Config configures a Coordinator.
type Config struct {
	DB       DynamoDB
	Kinesis  ShardLister
	Table    string
	Stream   string
	WorkerID string
	// LeaseDuration is how long a lease lives without renewal (metadata leaseDuration).
	LeaseDuration time.Duration
	// PassInterval is the time between passes (metadata shardSyncInterval).
	PassInterval time.Duration
	// LeaseStealing lets this replica claim leases from replicas holding more than their share.
	LeaseStealing bool
	// Protocol is how the replica keeps its leases alive; "" is ProtocolHeartbeat.
	Protocol Protocol
	// Wall is the clock LeaseTimeout is written with; nil means time.Now. A test seam: expiry never
	// depends on it.
	Wall func() time.Time
	Log  logger.Logger
}

// Protocol is how a replica keeps its leases alive (metadata leaseProtocol).
type Protocol string

const (
	// ProtocolHeartbeat: one heartbeat per replica; the lease items are read when something changed.
	ProtocolHeartbeat Protocol = "heartbeat"
	// ProtocolRenewal: heartbeats, and also a renewal of every lease every LeaseDuration/3 and a full
	// pass every PassInterval, which replicas without heartbeats need to see the leases alive.
	ProtocolRenewal Protocol = "renewal"
)

// Shard is what the engine needs to read a leased shard.
type Shard struct {
	ID      string
	Parents []string // ParentShardId and AdjacentParentShardId, when set
	// Checkpoint is the lease's checkpoint when taken: "" (none), a sequence number, or "seq:sub".
	Checkpoint string
	// ContinuesLineage is set when the shard has no checkpoint but a parent has a lease item with a
	// checkpoint: this application read the parent, so the child is read from its first record
	// (TRIM_HORIZON) whatever initialPosition says.
	ContinuesLineage bool
}
