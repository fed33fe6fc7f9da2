package kinesis

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
)

// listingMaxAge is how old our own listing of the stream may be when deciding that a parent shard
// without a checkpoint has left the stream.
const listingMaxAge = 5 * time.Second

// maxLineageDepth stops the ancestor walk on a malformed listing.
const maxLineageDepth = 64

// shardLineage knows the stream's shards and their parents. It learns them from the ListShards calls
// KCL makes every shard sync (observed by the KCL-facing client) and lists the stream itself only
// when it must.
type shardLineage struct {
	client *kinesis.Client // without the KCL middleware
	stream string

	// checkpointedAtStart holds the shards that had a checkpoint when this consumer started: this
	// application read them before, so their descendants are read from their first record.
	checkpointedAtStart map[string]bool

	mu       sync.RWMutex
	parents  map[string][]string // shard → ParentShardId and AdjacentParentShardId, when set
	listed   map[string]bool
	listedAt time.Time // last complete listing made here
}

func newShardLineage(client *kinesis.Client, stream string, checkpointed map[string]bool) *shardLineage {
	return &shardLineage{
		client:              client,
		stream:              stream,
		checkpointedAtStart: checkpointed,
		parents:             map[string][]string{},
		listed:              map[string]bool{},
	}
}

// observe records shards from a ListShards page.
func (l *shardLineage) observe(shards []types.Shard) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range shards {
		id := aws.ToString(s.ShardId)
		l.listed[id] = true
		l.parents[id] = shardParents(s)
	}
}

func shardParents(s types.Shard) []string {
	var ps []string
	for _, p := range []*string{s.ParentShardId, s.AdjacentParentShardId} {
		if id := aws.ToString(p); id != "" {
			ps = append(ps, id)
		}
	}
	return ps
}

// parentsOf returns the shard's parents, listing the stream if the shard is not known yet.
func (l *shardLineage) parentsOf(ctx context.Context, shardID string) ([]string, error) {
	l.mu.RLock()
	ps, ok := l.parents[shardID]
	l.mu.RUnlock()
	if ok {
		return ps, nil
	}
	if err := l.refresh(ctx); err != nil {
		return nil, err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.parents[shardID], nil
}

// stillListed reports whether the shard is in the stream, from a listing at most listingMaxAge old.
func (l *shardLineage) stillListed(ctx context.Context, shardID string) (bool, error) {
	l.mu.RLock()
	fresh := time.Since(l.listedAt) < listingMaxAge
	l.mu.RUnlock()
	if !fresh {
		if err := l.refresh(ctx); err != nil {
			return false, err
		}
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.listed[shardID], nil
}

// continuesReadLineage reports whether an ancestor of the shard had a checkpoint when the consumer
// started: then the shard is that lineage's continuation and must be read from its first record,
// whatever initialPosition says (as the Java KCL does). Records put on it while no replica ran would
// be skipped otherwise.
func (l *shardLineage) continuesReadLineage(shardID string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	frontier := l.parents[shardID]
	seen := map[string]bool{}
	for depth := 0; len(frontier) > 0 && depth < maxLineageDepth; depth++ {
		var next []string
		for _, p := range frontier {
			if seen[p] {
				continue
			}
			seen[p] = true
			if l.checkpointedAtStart[p] {
				return true
			}
			next = append(next, l.parents[p]...)
		}
		frontier = next
	}
	return false
}

// refresh lists the whole stream.
func (l *shardLineage) refresh(ctx context.Context) error {
	parents := map[string][]string{}
	listed := map[string]bool{}
	in := &kinesis.ListShardsInput{StreamName: aws.String(l.stream)}
	for {
		out, err := l.client.ListShards(ctx, in)
		if err != nil {
			return fmt.Errorf("kinesis binding error: listing the shards of %s: %w", l.stream, awserr.Classify(err))
		}
		for _, s := range out.Shards {
			id := aws.ToString(s.ShardId)
			listed[id] = true
			parents[id] = shardParents(s)
		}
		if out.NextToken == nil {
			break
		}
		// With a token the stream must not be named.
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, ps := range parents {
		l.parents[id] = ps
	}
	l.listed = listed
	l.listedAt = time.Now()
	return nil
}
