// Package shardmap tells which open shard of a stream a hash key belongs to, as Kinesis does when it
// places a record: the MD5 of the partition key, read as a 128-bit big-endian integer, or the
// record's explicit hash key, falls in exactly one open shard's hash key range.
//
// A Map is a snapshot of the open shards from ListShards. A Cache keeps the current snapshot and
// loads a new one when told that it is out of date (after a reshard, a put lands on a shard the
// snapshot did not predict).
package shardmap

import (
	"cmp"
	"context"
	"crypto/md5" //nolint:gosec // Kinesis hashes partition keys with MD5; this reproduces it
	"encoding/binary"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/dapr-kinesis/kinesis/internal/shardlist"
)

// Key is a 128-bit hash key.
type Key struct{ Hi, Lo uint64 }

// KeyOf is the hash key Kinesis gives a partition key.
func KeyOf(partitionKey string) Key {
	sum := md5.Sum([]byte(partitionKey)) //nolint:gosec // Kinesis's own hash
	return Key{Hi: binary.BigEndian.Uint64(sum[:8]), Lo: binary.BigEndian.Uint64(sum[8:])}
}

// ParseKey reads a decimal hash key from 0 to 2^128-1.
func ParseKey(s string) (Key, error) {
	v, ok := new(big.Int).SetString(s, 10)
	if !ok || v.Sign() < 0 || v.BitLen() > 128 {
		return Key{}, fmt.Errorf("shardmap: %q is not a hash key (a decimal integer from 0 to 2^128-1)", s)
	}
	var b [16]byte
	v.FillBytes(b[:])
	return Key{Hi: binary.BigEndian.Uint64(b[:8]), Lo: binary.BigEndian.Uint64(b[8:])}, nil
}

// String is the key in decimal, as ExplicitHashKey takes it.
func (k Key) String() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], k.Hi)
	binary.BigEndian.PutUint64(b[8:], k.Lo)
	return new(big.Int).SetBytes(b[:]).String()
}

// Compare returns -1, 0 or +1 as k is less than, equal to or greater than o.
func (k Key) Compare(o Key) int {
	if c := cmp.Compare(k.Hi, o.Hi); c != 0 {
		return c
	}
	return cmp.Compare(k.Lo, o.Lo)
}

// Shard is an open shard and its hash key range, both ends included.
type Shard struct {
	ID         string
	Start, End Key
}

// Map is the open shards of a stream at one moment. It is not changed after Load returns it.
type Map struct {
	shards []Shard // sorted by Start
}

// Len is the number of open shards.
func (m *Map) Len() int { return len(m.shards) }

// Find returns the open shard whose range holds k. It fails only when no open shard covers k, which
// happens while a reshard is under way or when the snapshot is out of date.
func (m *Map) Find(k Key) (Shard, bool) {
	// The first shard starting after k; the one before it is the candidate.
	i, _ := slices.BinarySearchFunc(m.shards, k, func(s Shard, k Key) int {
		if s.Start.Compare(k) <= 0 {
			return -1
		}
		return 1
	})
	if i == 0 {
		return Shard{}, false
	}
	s := m.shards[i-1]
	if k.Compare(s.End) > 0 {
		return Shard{}, false
	}
	return s, true
}

// Lister is the part of the Kinesis client Load uses.
type Lister = shardlist.Lister

// Load lists the stream's shards and keeps the open ones (those without an ending sequence number).
// It filters itself rather than asking for ShardFilter, which not every server implements.
func Load(ctx context.Context, client Lister, stream string) (*Map, error) {
	shards, err := shardlist.All(ctx, client, stream)
	if err != nil {
		return nil, fmt.Errorf("shardmap: listing shards of stream %q: %w", stream, err)
	}
	m := &Map{}
	for _, s := range shards {
		if s.SequenceNumberRange != nil && s.SequenceNumberRange.EndingSequenceNumber != nil {
			continue // closed
		}
		if s.HashKeyRange == nil {
			return nil, fmt.Errorf("shardmap: shard %s of stream %q has no hash key range", aws.ToString(s.ShardId), stream)
		}
		start, err := ParseKey(aws.ToString(s.HashKeyRange.StartingHashKey))
		if err != nil {
			return nil, fmt.Errorf("shardmap: shard %s: %w", aws.ToString(s.ShardId), err)
		}
		end, err := ParseKey(aws.ToString(s.HashKeyRange.EndingHashKey))
		if err != nil {
			return nil, fmt.Errorf("shardmap: shard %s: %w", aws.ToString(s.ShardId), err)
		}
		m.shards = append(m.shards, Shard{ID: aws.ToString(s.ShardId), Start: start, End: end})
	}
	slices.SortFunc(m.shards, func(a, b Shard) int { return a.Start.Compare(b.Start) })
	return m, nil
}

// Cache holds a stream's current Map and reloads it when it is marked out of date, at most once per
// minimum interval: a stream in the middle of a reshard would otherwise be listed by every put.
type Cache struct {
	client      Lister
	stream      string
	minInterval time.Duration

	cur   atomic.Pointer[Map]
	stale atomic.Bool   // no map yet, a load failed, or Invalidate was called since the last load began
	gen   atomic.Uint64 // counts Invalidate calls

	mu       sync.Mutex
	loading  chan struct{} // closed when the load in progress ends; nil when none runs
	lastLoad time.Time     // when the last load began
}

// NewCache returns a cache that loads on first use.
func NewCache(client Lister, stream string, minInterval time.Duration) *Cache {
	c := &Cache{client: client, stream: stream, minInterval: minInterval}
	c.stale.Store(true)
	return c
}

// Current is the map in hand, without loading; nil before the first successful load.
func (c *Cache) Current() *Map { return c.cur.Load() }

// Invalidate marks the map out of date: the next Get loads a new one.
func (c *Cache) Invalidate() {
	c.gen.Add(1)
	c.stale.Store(true)
}

// Get returns the current map, loading a new one first when it is out of date and the minimum
// interval since the last load has passed. One load runs at a time, in the goroutine of the call
// that starts it; other calls meanwhile return the map in hand, or wait for the load when there is
// none yet. The error is that of the load this call made, if it made one; the map returned is then
// the one in hand, which may be nil.
func (c *Cache) Get(ctx context.Context) (*Map, error) {
	if !c.stale.Load() {
		return c.cur.Load(), nil
	}
	c.mu.Lock()
	if wait := c.loading; wait != nil {
		c.mu.Unlock()
		if m := c.cur.Load(); m != nil {
			return m, nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
		}
		return c.cur.Load(), nil
	}
	if time.Since(c.lastLoad) < c.minInterval {
		c.mu.Unlock()
		return c.cur.Load(), nil
	}
	c.loading = make(chan struct{})
	c.lastLoad = time.Now()
	gen := c.gen.Load()
	c.mu.Unlock()

	m, err := Load(ctx, c.client, c.stream)
	c.mu.Lock()
	if err == nil { // a failed load leaves it stale: the next call after the interval tries again
		c.cur.Store(m)
		c.stale.Store(false)
		if c.gen.Load() != gen { // invalidated while listing: the new map may already be out of date
			c.stale.Store(true)
		}
	}
	close(c.loading)
	c.loading = nil
	c.mu.Unlock()
	return c.cur.Load(), err
}
