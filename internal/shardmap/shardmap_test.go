package shardmap

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/testwait"
)

const maxKey = "340282366920938463463374607431768211455" // 2^128-1

func TestKeyOfIsTheMD5AsABigEndianInteger(t *testing.T) {
	t.Parallel()
	// md5("") = d41d8cd98f00b204e9800998ecf8427e
	assert.Equal(t, Key{Hi: 0xd41d8cd98f00b204, Lo: 0xe9800998ecf8427e}, KeyOf(""))
	assert.Equal(t, "281949768489412648962353822266799178366", KeyOf("").String())
}

func TestParseKeyRoundTripsAndRejectsWhatIsNoHashKey(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"0", "1", "18446744073709551616", maxKey} {
		k, err := ParseKey(s)
		require.NoError(t, err, s)
		assert.Equal(t, s, k.String())
	}
	k, err := ParseKey("18446744073709551616") // 2^64
	require.NoError(t, err)
	assert.Equal(t, Key{Hi: 1}, k)
	for _, s := range []string{"", "-1", "x", "340282366920938463463374607431768211456", "1.5"} {
		_, err := ParseKey(s)
		require.Error(t, err, s)
	}
}

func mustKey(t *testing.T, s string) Key {
	t.Helper()
	k, err := ParseKey(s)
	require.NoError(t, err)
	return k
}

func TestFindPicksTheShardWhoseRangeHoldsTheKey(t *testing.T) {
	t.Parallel()
	m := &Map{shards: []Shard{
		{ID: "a", Start: mustKey(t, "0"), End: mustKey(t, "99")},
		{ID: "b", Start: mustKey(t, "100"), End: mustKey(t, "199")},
		// a gap: 200-299, as while a reshard is under way
		{ID: "c", Start: mustKey(t, "300"), End: mustKey(t, maxKey)},
	}}
	for key, want := range map[string]string{"0": "a", "99": "a", "100": "b", "199": "b", "300": "c", maxKey: "c"} {
		s, ok := m.Find(mustKey(t, key))
		require.True(t, ok, key)
		assert.Equal(t, want, s.ID, key)
	}
	_, ok := m.Find(mustKey(t, "250"))
	assert.False(t, ok, "in the gap")
	_, ok = (&Map{}).Find(Key{})
	assert.False(t, ok, "no shards")
}

// fakeLister answers ListShards from pages; it is a fake at the SDK boundary.
type fakeLister struct {
	mu     sync.Mutex
	pages  [][]types.Shard
	err    error
	calls  atomic.Int32
	hold   chan struct{} // when set, each call waits for it
	inputs []*kinesis.ListShardsInput
}

func (f *fakeLister) ListShards(ctx context.Context, in *kinesis.ListShardsInput, _ ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	f.calls.Add(1)
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inputs = append(f.inputs, in)
	if f.err != nil {
		return nil, f.err
	}
	page := 0
	if in.NextToken != nil {
		page, _ = strconv.Atoi(*in.NextToken)
	}
	out := &kinesis.ListShardsOutput{Shards: f.pages[page]}
	if page+1 < len(f.pages) {
		out.NextToken = aws.String(strconv.Itoa(page + 1))
	}
	return out, nil
}

func shard(id, start, end string, closed bool) types.Shard {
	s := types.Shard{
		ShardId:             aws.String(id),
		HashKeyRange:        &types.HashKeyRange{StartingHashKey: aws.String(start), EndingHashKey: aws.String(end)},
		SequenceNumberRange: &types.SequenceNumberRange{StartingSequenceNumber: aws.String("1")},
	}
	if closed {
		s.SequenceNumberRange.EndingSequenceNumber = aws.String("2")
	}
	return s
}

func TestLoadReadsEveryPageAndKeepsOnlyOpenShards(t *testing.T) {
	t.Parallel()
	f := &fakeLister{pages: [][]types.Shard{
		{shard("parent", "0", maxKey, true), shard("child-2", "200", maxKey, false)},
		{shard("child-1", "0", "199", false)},
	}}
	m, err := Load(t.Context(), f, "s")
	require.NoError(t, err)
	require.Equal(t, 2, m.Len())
	s, ok := m.Find(mustKey(t, "5"))
	require.True(t, ok)
	assert.Equal(t, "child-1", s.ID, "from the second page")
	s, ok = m.Find(mustKey(t, "500"))
	require.True(t, ok)
	assert.Equal(t, "child-2", s.ID)
	require.Len(t, f.inputs, 2)
	assert.Nil(t, f.inputs[1].StreamName, "a paged request names no stream")

	f = &fakeLister{pages: [][]types.Shard{{shard("bad", "x", maxKey, false)}}}
	_, err = Load(t.Context(), f, "s")
	require.ErrorContains(t, err, "bad")
	boom := errors.New("boom")
	_, err = Load(t.Context(), &fakeLister{err: boom}, "s")
	require.ErrorIs(t, err, boom)
}

func TestCacheLoadsOnceForConcurrentCallersAndReloadsWhenInvalidated(t *testing.T) {
	t.Parallel()
	f := &fakeLister{pages: [][]types.Shard{{shard("one", "0", maxKey, false)}}, hold: make(chan struct{})}
	c := NewCache(f, "s", 0)
	assert.Nil(t, c.Current())

	var wg sync.WaitGroup
	got := make([]*Map, 8)
	for i := range got {
		wg.Go(func() { got[i], _ = c.Get(t.Context()) })
	}
	testwait.Eventually(t, func() bool { return f.calls.Load() == 1 }, 10*time.Second, time.Millisecond)
	close(f.hold)
	wg.Wait()
	for i, m := range got {
		require.NotNil(t, m, "caller %d waited for the first map", i)
	}
	assert.EqualValues(t, 1, f.calls.Load(), "one load for all")

	m, err := c.Get(t.Context())
	require.NoError(t, err)
	assert.Same(t, got[0], m, "not reloaded while up to date")
	assert.EqualValues(t, 1, f.calls.Load())

	f.mu.Lock()
	f.pages = [][]types.Shard{{shard("two", "0", maxKey, false)}}
	f.mu.Unlock()
	c.Invalidate()
	m, err = c.Get(t.Context())
	require.NoError(t, err)
	s, _ := m.Find(Key{})
	assert.Equal(t, "two", s.ID)
	assert.EqualValues(t, 2, f.calls.Load())
}

func TestCacheKeepsTheOldMapWhenALoadFailsAndRetriesAfterTheInterval(t *testing.T) {
	t.Parallel()
	f := &fakeLister{pages: [][]types.Shard{{shard("one", "0", maxKey, false)}}}
	c := NewCache(f, "s", time.Hour)
	first, err := c.Get(t.Context())
	require.NoError(t, err)
	require.NotNil(t, first)

	boom := errors.New("boom")
	f.mu.Lock()
	f.err = boom
	f.mu.Unlock()
	c.Invalidate()
	m, err := c.Get(t.Context())
	assert.Same(t, first, m, "within the interval nothing is listed")
	require.NoError(t, err)
	assert.EqualValues(t, 1, f.calls.Load())

	c.minInterval = 0
	m, err = c.Get(t.Context())
	require.ErrorIs(t, err, boom)
	assert.Same(t, first, m, "a failed load keeps the map in hand")
	m, err = c.Get(t.Context())
	require.ErrorIs(t, err, boom, "still out of date: tried again")
	assert.Same(t, first, m)
	assert.EqualValues(t, 3, f.calls.Load())
}

func TestCacheInvalidatedDuringALoadLoadsAgain(t *testing.T) {
	t.Parallel()
	f := &fakeLister{pages: [][]types.Shard{{shard("one", "0", maxKey, false)}}, hold: make(chan struct{})}
	c := NewCache(f, "s", 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Get(t.Context())
	}()
	testwait.Eventually(t, func() bool { return f.calls.Load() == 1 }, 10*time.Second, time.Millisecond)
	c.Invalidate() // a put saw a new shard while the list was being read
	close(f.hold)
	<-done
	_, err := c.Get(t.Context())
	require.NoError(t, err)
	assert.EqualValues(t, 2, f.calls.Load(), "the map loaded during the invalidation is not trusted")
}
