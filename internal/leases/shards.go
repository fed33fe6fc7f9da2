package leases

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/shardlist"
)

// shardListing is the stream's shards, as ListShards gave them, with their parents.
type shardListing struct {
	at      time.Time
	order   []string            // shards in listing order
	parents map[string][]string // shard → ParentShardId and AdjacentParentShardId, when set
}

func (s *shardListing) listed(id string) bool {
	_, ok := s.parents[id]
	return ok
}

// hasChildren reports whether the listing knows a child of the shard.
func (s *shardListing) hasChildren(id string) bool {
	for _, ps := range s.parents {
		for _, p := range ps {
			if p == id {
				return true
			}
		}
	}
	return false
}

// listShards lists the whole stream.
func listShards(ctx context.Context, api ShardLister, stream string) (*shardListing, error) {
	shards, err := shardlist.All(ctx, api, stream)
	if err != nil {
		return nil, fmt.Errorf("kinesis binding error: listing the shards of %s: %w", stream, awserr.Classify(err))
	}
	l := &shardListing{at: time.Now(), parents: map[string][]string{}}
	for _, s := range shards {
		id := aws.ToString(s.ShardId)
		l.order = append(l.order, id)
		l.parents[id] = shardParents(s)
	}
	return l, nil
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

// refreshListing lists the stream when it must: first, after a shard ended (here, or a SHARD_END in
// the table whose children the listing does not know), or when the listing is shardListMaxAge old;
// never more than once per pass interval.
func (c *Coordinator) refreshListing(ctx context.Context, items []item) error {
	c.mu.Lock()
	due := c.listDue || c.listing == nil || time.Since(c.listing.at) >= shardListMaxAge
	if !due {
		for _, it := range items {
			if finished(it) && c.listing.listed(it.shardID) && !c.listing.hasChildren(it.shardID) {
				due = true
				break
			}
		}
	}
	if due && c.listing != nil && time.Since(c.listing.at) < c.cfg.PassInterval {
		due = false
	}
	c.mu.Unlock()
	if !due {
		return nil
	}
	l, err := listShards(ctx, c.cfg.Kinesis, c.cfg.Stream)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.listing = l
	c.listDue = false
	c.mu.Unlock()
	return nil
}

// relistIfOld lists the stream when the listing is shardListMaxAge old, without reading the lease
// table: a full pass follows only if the shards changed (a reshard whose end this replica missed).
func (c *Coordinator) relistIfOld(ctx context.Context) (changed bool, err error) {
	c.mu.Lock()
	old := c.listing
	c.mu.Unlock()
	if old == nil || time.Since(old.at) < shardListMaxAge {
		return false, nil
	}
	l, err := listShards(ctx, c.cfg.Kinesis, c.cfg.Stream)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	c.listing = l
	c.mu.Unlock()
	return !slices.Equal(l.order, old.order) || !maps.EqualFunc(l.parents, old.parents, slices.Equal), nil
}

// leasable returns the listed shards not yet read to their end whose parents are: every parent
// still listed has SHARD_END in the table (a parent no longer listed was trimmed, so it is done).
func (c *Coordinator) leasable(byShard map[string]item) []string {
	c.mu.Lock()
	l := c.listing
	c.mu.Unlock()
	var out []string
	for _, id := range l.order {
		if finished(byShard[id]) {
			continue
		}
		ready := true
		for _, p := range l.parents[id] {
			if l.listed(p) && !finished(byShard[p]) {
				ready = false
				break
			}
		}
		if ready {
			out = append(out, id)
		}
	}
	return out
}

func (c *Coordinator) parentsOf(shardID string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.listing == nil {
		return nil
	}
	return c.listing.parents[shardID]
}
