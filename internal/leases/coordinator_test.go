package leases

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/position"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
	"github.com/dapr/kit/logger"
)

// requestCounter counts a client's requests by operation (the X-Amz-Target header).
type requestCounter struct {
	next aws.HTTPClient
	mu   sync.Mutex
	ops  map[string]int
}

func newRequestCounter(next aws.HTTPClient) *requestCounter {
	return &requestCounter{next: next, ops: map[string]int{}}
}

// Do counts the request; a write of the heartbeat item counts as "Heartbeat", not "UpdateItem".
func (c *requestCounter) Do(req *http.Request) (*http.Response, error) {
	target := req.Header.Get("X-Amz-Target")
	op := target[strings.LastIndex(target, ".")+1:]
	if op == "UpdateItem" && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		if bytes.Contains(body, []byte(`{"S":"`+HeartbeatKey+`"}`)) {
			op = "Heartbeat"
		}
	}
	c.mu.Lock()
	c.ops[op]++
	c.mu.Unlock()
	return c.next.Do(req)
}

func (c *requestCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.ops))
	for k, v := range c.ops {
		out[k] = v
	}
	return out
}

// fixture is a stream and a lease table on the emulators.
type fixture struct {
	stream, table string
	db            *dynamodb.Client
	kinesis       *kinesis.Client
}

func newFixture(t *testing.T, shards int32) *fixture {
	t.Helper()
	srv := localaws.Get(t)
	f := &fixture{stream: localaws.NewStream(t, shards), table: localaws.UniqueName("leases"), db: srv.DynamoDBClient(), kinesis: srv.KinesisClient()}
	require.NoError(t, EnsureTable(t.Context(), f.db, f.table, logger.NewLogger(t.Name())))
	t.Cleanup(func() {
		_, _ = f.db.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(f.table)})
	})
	return f
}

// replica is a coordinator under test, with a stand-in for the engine: each lease taken is kept
// until it is lost, or handed over (with the checkpoint handoffCheckpoint gives) when claimed.
type replica struct {
	t       *testing.T
	c       *Coordinator
	worker  string
	counter *requestCounter
	abandon context.CancelFunc
	done    chan struct{}

	mu         sync.Mutex
	acquired   []Shard
	acquiredAt map[string]time.Time // shard → when last taken
	lost       int
	lostAt     map[string]time.Time // shard → when its delivery had to stop
	handed     int
	wg         sync.WaitGroup
}

type replicaOptions struct {
	lease, pass time.Duration
	wall        func() time.Time
	noStealing  bool
	protocol    Protocol
	checkpoint  func(Shard) string // the checkpoint a handoff carries
	db          func(*dynamodb.Options)
	kinesis     func(*kinesis.Options)
}

func (f *fixture) start(t *testing.T, worker string, o replicaOptions) *replica {
	t.Helper()
	if o.lease == 0 {
		o.lease = 2 * time.Second
	}
	if o.pass == 0 {
		o.pass = 200 * time.Millisecond
	}
	srv := localaws.Get(t)
	counter := newRequestCounter(srv.AWSConfig().HTTPClient)
	dbOptions := func(do *dynamodb.Options) {
		do.HTTPClient = counter
		if o.db != nil {
			o.db(do)
		}
	}
	c, err := New(Config{
		DB: srv.DynamoDBClient(dbOptions),
		Kinesis: srv.KinesisClient(func(ko *kinesis.Options) {
			ko.HTTPClient = counter
			if o.kinesis != nil {
				o.kinesis(ko)
			}
		}),
		Table:         f.table,
		Stream:        f.stream,
		WorkerID:      worker,
		LeaseDuration: o.lease,
		PassInterval:  o.pass,
		LeaseStealing: !o.noStealing,
		Protocol:      o.protocol,
		Wall:          o.wall,
		Log:           logger.NewLogger(t.Name() + "-" + worker),
	})
	require.NoError(t, err)
	ctx, abandon := context.WithCancel(context.Background())
	r := &replica{
		t: t, c: c, worker: worker, counter: counter, abandon: abandon, done: make(chan struct{}),
		acquiredAt: map[string]time.Time{}, lostAt: map[string]time.Time{},
	}
	go func() {
		defer close(r.done)
		assert.NoError(t, c.Run(ctx, func(l *Lease) {
			r.mu.Lock()
			r.acquired = append(r.acquired, l.Shard())
			r.acquiredAt[l.Shard().ID] = time.Now()
			r.mu.Unlock()
			r.wg.Go(func() { r.serve(l, o.checkpoint) })
		}))
	}()
	t.Cleanup(func() {
		abandon()
		<-r.done
		r.wg.Wait()
	})
	return r
}

// serve plays the engine for one lease.
func (r *replica) serve(l *Lease, checkpoint func(Shard) string) {
	select {
	case <-l.Lost():
		r.mu.Lock()
		r.lost++
		r.lostAt[l.Shard().ID] = time.Now()
		r.mu.Unlock()
	case <-l.HandoffRequested():
		cp := ""
		if checkpoint != nil {
			cp = checkpoint(l.Shard())
		}
		if err := l.HandOff(context.Background(), cp); err == nil {
			r.mu.Lock()
			r.handed++
			r.mu.Unlock()
		}
	case <-r.done:
	}
}

// stop is Close: no more taking, every held lease released; Run returns.
func (r *replica) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, r.c.StopTaking(t.Context()))
	for _, l := range r.c.Held() {
		require.NoError(t, l.Release(t.Context(), ""))
	}
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return once every lease was released")
	}
}

func (r *replica) acquiredShards() []Shard {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Shard(nil), r.acquired...)
}

// owners reads who owns what, as an operator would.
func (f *fixture) owners(t *testing.T) (owners map[string]string, items map[string]item) {
	t.Helper()
	tbl := &table{db: f.db, name: f.table}
	all, _, err := tbl.scan(t.Context())
	require.NoError(t, err)
	owners, items = map[string]string{}, map[string]item{}
	for _, it := range all {
		items[it.shardID] = it
		if it.owner != "" {
			owners[it.shardID] = it.owner
		}
	}
	return owners, items
}

func countBy(owners map[string]string) map[string]int {
	out := map[string]int{}
	for _, o := range owners {
		out[o]++
	}
	return out
}

func fair(counts map[string]int, total int, workers ...string) bool {
	sum, lo, hi := 0, total, 0
	for _, w := range workers {
		sum += counts[w]
		lo, hi = min(lo, counts[w]), max(hi, counts[w])
	}
	return sum == total && hi-lo <= 1
}

func TestOnePassTakesEveryFreeLease(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 64)
	// A long pass interval: everything below must happen in the first pass.
	r := f.start(t, "solo", replicaOptions{pass: time.Minute, lease: 30 * time.Second})
	began := time.Now()
	testwait.Eventually(t, func() bool { return len(r.acquiredShards()) == 64 }, 20*time.Second, 20*time.Millisecond)
	t.Logf("64 leases taken %v after Run", time.Since(began).Round(time.Millisecond))
	owners, _ := f.owners(t)
	assert.Equal(t, 64, countBy(owners)["solo"])
	ops := r.counter.snapshot()
	assert.Equal(t, 1, ops["Scan"], "one lease-table scan")
	assert.Equal(t, 1, ops["ListShards"], "one listing")
	assert.Equal(t, 64, ops["UpdateItem"], "one conditional write per lease")
	assert.GreaterOrEqual(t, ops["Heartbeat"], 1, "joined the heartbeats before taking")
}

func TestThreeReplicasStartedTogetherShareFairlyAndStayPut(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 64)
	began := time.Now()
	for _, w := range []string{"a", "b", "c"} {
		// A lease well above the default 2 s: this test is about the split, and on a loaded machine
		// 192 renewals against one dynalite can lag past 2 s and let a lease expire (seen once).
		f.start(t, w, replicaOptions{lease: 6 * time.Second})
	}
	var settled map[string]string
	testwait.Eventually(t, func() bool {
		var items map[string]item
		settled, items = f.owners(t)
		for _, it := range items {
			if it.claim != "" {
				return false
			}
		}
		return fair(countBy(settled), 64, "a", "b", "c")
	}, 30*time.Second, 50*time.Millisecond, "64 shards split 22/21/21 with no claim pending")
	t.Logf("fair %v after the three started: %v", time.Since(began).Round(time.Millisecond), countBy(settled))
	testwait.Never(t, func() bool {
		owners, _ := f.owners(t)
		return len(owners) != 64 || !fair(countBy(owners), 64, "a", "b", "c")
	}, 3*time.Second, 100*time.Millisecond, "the split holds")
}

func TestJoinerClaimsItsShareInOnePassAndGetsTheHandedOverCheckpoints(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 12)
	checkpointOf := func(s Shard) string { return "4900000000000000000000" + strings.TrimPrefix(s.ID, "shardId-") }
	first := f.start(t, "first", replicaOptions{checkpoint: checkpointOf, lease: 10 * time.Second})
	testwait.Eventually(t, func() bool { return len(first.acquiredShards()) == 12 }, 20*time.Second, 20*time.Millisecond)

	// The joiner's passes are slow: its first pass must claim all 6 it lacks.
	second := f.start(t, "second", replicaOptions{pass: 3 * time.Second, lease: 10 * time.Second})
	testwait.Eventually(t, func() bool { return len(second.acquiredShards()) == 6 }, 20*time.Second, 20*time.Millisecond)
	ops := second.counter.snapshot()
	assert.LessOrEqual(t, ops["Scan"], 3, "claims and takes within a few passes")
	for _, s := range second.acquiredShards() {
		assert.Equal(t, checkpointOf(s), s.Checkpoint, "%s starts from the checkpoint handed over", s.ID)
	}
	first.mu.Lock()
	assert.Equal(t, 6, first.handed)
	first.mu.Unlock()
	owners, _ := f.owners(t)
	assert.Equal(t, map[string]int{"first": 6, "second": 6}, countBy(owners))
}

// TestLeaseLostWhenAnotherOwnerIsWritten: a replica learns its lease was taken, and writes nothing
// more of it, at its next pass (heartbeat protocol: the taker announced it) or renewal (renewal
// protocol: the taker may be a replica without heartbeats, which announces nothing).
func TestLeaseLostWhenAnotherOwnerIsWritten(t *testing.T) {
	t.Parallel()
	for _, protocol := range []Protocol{ProtocolHeartbeat, ProtocolRenewal} {
		t.Run(string(protocol), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 1)
			r := f.start(t, "owner", replicaOptions{lease: 3 * time.Second, protocol: protocol})
			testwait.Eventually(t, func() bool { return len(r.c.Held()) == 1 }, 20*time.Second, 20*time.Millisecond)
			l := r.c.Held()[0]
			require.NoError(t, l.Checkpoint(t.Context(), "100"))
			time.Sleep(3 * time.Second) // past the passes that follow the start-up

			_, err := f.db.UpdateItem(t.Context(), &dynamodb.UpdateItemInput{
				TableName: aws.String(f.table), Key: shardKey(l.Shard().ID),
				UpdateExpression:          aws.String("SET AssignedTo = :o ADD LeaseCounter :one"),
				ExpressionAttributeValues: map[string]dtypes.AttributeValue{":o": str("thief"), ":one": num(1)},
			})
			require.NoError(t, err)
			if protocol == ProtocolHeartbeat {
				f.announce(t)
			}
			select {
			case <-l.Lost():
			case <-time.After(2 * time.Second):
				t.Fatal("the lease was not found lost within a renewal or a pass")
			}
			require.ErrorIs(t, l.Checkpoint(t.Context(), "200"), ErrLeaseLost)
			_, items := f.owners(t)
			assert.Equal(t, "100", items[l.Shard().ID].checkpoint, "nothing written after the loss")
			assert.Equal(t, "thief", items[l.Shard().ID].owner)
		})
	}
}

// announce bumps the generation, as a replica does after changing a lease.
func (f *fixture) announce(t *testing.T) {
	t.Helper()
	_, err := f.db.UpdateItem(t.Context(), &dynamodb.UpdateItemInput{
		TableName: aws.String(f.table), Key: shardKey(HeartbeatKey),
		UpdateExpression:          aws.String("ADD #gen :one"),
		ExpressionAttributeNames:  map[string]string{"#gen": AttrGeneration},
		ExpressionAttributeValues: map[string]dtypes.AttributeValue{":one": num(1)},
	})
	require.NoError(t, err)
}

func TestExpiryDoesNotTrustClocks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 4)
	const lease = 2 * time.Second
	ahead := f.start(t, "ahead", replicaOptions{lease: lease, wall: func() time.Time { return time.Now().Add(30 * time.Second) }})
	behind := f.start(t, "behind", replicaOptions{lease: lease, wall: func() time.Time { return time.Now().Add(-30 * time.Second) }})
	testwait.Eventually(t, func() bool {
		owners, _ := f.owners(t)
		return fair(countBy(owners), 4, "ahead", "behind")
	}, 20*time.Second, 50*time.Millisecond)
	settled, _ := f.owners(t)
	testwait.Never(t, func() bool {
		owners, _ := f.owners(t)
		for id, o := range settled {
			if owners[id] != o {
				return true
			}
		}
		return false
	}, 4*lease, 100*time.Millisecond, "neither takes a live lease, though one's timeouts look expired to the other")

	ahead.abandon() // a crash: its leases stay in the table, timeouts a minute ahead of behind's clock
	<-ahead.done
	died := time.Now()
	testwait.Eventually(t, func() bool { return len(behind.c.Held()) == 4 }, lease+2*time.Second, 20*time.Millisecond,
		"the dead replica's leases are taken after the lease duration plus a pass")
	t.Logf("dead leases taken %v after the crash (lease %v)", time.Since(died).Round(time.Millisecond), lease)
}

// TestRequestsOfASteadyReplica: what a replica holding its leases asks of the lease table while
// nothing changes. With heartbeats: one heartbeat write every lease/3 and one small read every
// pass interval, no scan and no lease write; with renewals: a scan every pass and a write per lease every
// lease/3 besides.
func TestRequestsOfASteadyReplica(t *testing.T) {
	t.Parallel()
	const lease, pass, window = 3 * time.Second, 250 * time.Millisecond, 6 * time.Second
	for _, protocol := range []Protocol{ProtocolHeartbeat, ProtocolRenewal} {
		t.Run(string(protocol), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 8)
			r := f.start(t, "steady", replicaOptions{lease: lease, pass: pass, protocol: protocol})
			testwait.Eventually(t, func() bool { return len(r.c.Held()) == 8 }, 20*time.Second, 20*time.Millisecond)
			time.Sleep(lease + time.Second) // past the fast steps that follow a change
			before := r.counter.snapshot()
			time.Sleep(window)
			after := r.counter.snapshot()
			d := func(op string) int { return after[op] - before[op] }
			t.Logf("in %v: %d scans, %d listings, %d lease writes, %d heartbeats, %d heartbeat reads",
				window, d("Scan"), d("ListShards"), d("UpdateItem"), d("Heartbeat"), d("GetItem"))
			assert.Zero(t, d("ListShards"), "no listing while no shard ends and the last is recent")
			assert.InDelta(t, int(window/(lease/3)), d("Heartbeat"), 1, "a heartbeat every lease/3")
			if protocol == ProtocolHeartbeat {
				assert.Zero(t, d("Scan"), "no scan while the heartbeats show no change")
				assert.Zero(t, d("UpdateItem"), "no lease write")
				assert.InDelta(t, int(window/pass), d("GetItem"), 3, "a heartbeat read every pass interval")
				return
			}
			assert.InDelta(t, int(window/pass), d("Scan"), 3, "a scan per pass")
			assert.InDelta(t, int(window/(lease/3))*8, d("UpdateItem"), 8, "a renewal of each of the 8 leases every lease/3")
		})
	}
}

func TestChildrenWaitForTheirParentsAndStartWhenTheyFinish(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	r := f.start(t, "w", replicaOptions{lease: 3 * time.Second})
	testwait.Eventually(t, func() bool { return len(r.c.Held()) == 1 }, 20*time.Second, 20*time.Millisecond)
	parent := r.c.Held()[0]
	require.NoError(t, parent.Checkpoint(t.Context(), "100"))

	mid := new(big.Int).Lsh(big.NewInt(1), 127).String()
	_, err := f.kinesis.SplitShard(t.Context(), &kinesis.SplitShardInput{StreamName: aws.String(f.stream), ShardToSplit: aws.String(parent.Shard().ID), NewStartingHashKey: aws.String(mid)})
	require.NoError(t, err)
	testwait.Eventually(t, func() bool {
		out, err := f.kinesis.DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(f.stream)})
		return err == nil && out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive
	}, 10*time.Second, 20*time.Millisecond)
	// Make the coordinator see the children (a listing is due once a minute otherwise).
	r.c.shardEnded()
	time.Sleep(time.Second)
	assert.Len(t, r.acquiredShards(), 1, "the children are not taken while their parent is unfinished")

	finished := time.Now()
	require.NoError(t, parent.Finish(t.Context()))
	testwait.Eventually(t, func() bool { return len(r.acquiredShards()) == 3 }, 3*time.Second, 10*time.Millisecond,
		"the children are taken as the parent finishes, without waiting for a listing")
	t.Logf("children taken %v after the parent finished", time.Since(finished).Round(time.Millisecond))
	for _, s := range r.acquiredShards()[1:] {
		assert.Equal(t, []string{parent.Shard().ID}, s.Parents)
		assert.True(t, s.ContinuesLineage, "%s continues a shard this application read", s.ID)
		assert.Empty(t, s.Checkpoint)
	}
	_, items := f.owners(t)
	assert.Equal(t, position.ShardEnd, items[parent.Shard().ID].checkpoint)
	assert.Empty(t, items[parent.Shard().ID].owner, "a finished shard is nobody's")
}

func TestReleasedLeasesGoToAnotherReplicaAtItsNextPass(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 4)
	a := f.start(t, "a", replicaOptions{lease: 10 * time.Second})
	testwait.Eventually(t, func() bool { return len(a.c.Held()) == 4 }, 20*time.Second, 20*time.Millisecond)
	b := f.start(t, "b", replicaOptions{lease: 10 * time.Second})
	testwait.Eventually(t, func() bool { return len(b.c.Held()) == 2 }, 20*time.Second, 20*time.Millisecond)

	stopped := time.Now()
	a.stop(t)
	testwait.Eventually(t, func() bool { return len(b.c.Held()) == 4 }, 5*time.Second, 20*time.Millisecond,
		"released leases are taken well within the 10 s lease")
	t.Logf("taken %v after the release", time.Since(stopped).Round(time.Millisecond))
}

func TestUpstreamTableIsReadAsItIs(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	out, err := f.kinesis.ListShards(t.Context(), &kinesis.ListShardsInput{StreamName: aws.String(f.stream)})
	require.NoError(t, err)
	// As vmware-go-kcl writes them: no LeaseCounter; one lease left by a dead worker with a timeout
	// far in the future, one released.
	for i, s := range out.Shards {
		item := map[string]dtypes.AttributeValue{
			AttrShardID:    str(aws.ToString(s.ShardId)),
			AttrCheckpoint: str("4959" + strings.Repeat("0", 40) + string(rune('1'+i))),
			AttrTimeout:    str(time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)),
		}
		if i == 0 {
			item[AttrOwner] = str("upstream-worker")
		}
		_, err := f.db.PutItem(t.Context(), &dynamodb.PutItemInput{TableName: aws.String(f.table), Item: item})
		require.NoError(t, err)
	}
	const lease = 2 * time.Second
	r := f.start(t, "new", replicaOptions{lease: lease})
	testwait.Eventually(t, func() bool { return len(r.acquiredShards()) == 1 }, 10*time.Second, 20*time.Millisecond, "the free lease is taken at once")
	began := time.Now()
	testwait.Eventually(t, func() bool { return len(r.acquiredShards()) == 2 }, lease+3*time.Second, 20*time.Millisecond,
		"the dead worker's lease, its timeout an hour ahead, is taken once seen unrenewed for the lease duration")
	t.Logf("the dead upstream lease was taken %v after the free one", time.Since(began).Round(time.Millisecond))
	for i, s := range r.acquiredShards() {
		assert.True(t, strings.HasPrefix(s.Checkpoint, "4959"), "shard %d keeps its checkpoint: %q", i, s.Checkpoint)
	}
}

// TestLeaseHandedToAWorkerAtItsShareIsTakenAtOnce: a lease the table already names this worker for
// (handed over just after its scan, say) is read at its next pass even when free leases alone would
// fill its share; left unread, it would idle until others judged it expired.
func TestLeaseHandedToAWorkerAtItsShareIsTakenAtOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 36)
	out, err := f.kinesis.ListShards(t.Context(), &kinesis.ListShardsInput{StreamName: aws.String(f.stream)})
	require.NoError(t, err)
	require.Len(t, out.Shards, 36)
	// Five other live workers hold one lease each (they count for the share: 36 / 6 = 6), one lease
	// names "late" (handed over to it), thirty are free.
	ours := aws.ToString(out.Shards[5].ShardId)
	checkpointOf := func(i int) string { return fmt.Sprintf("4959%044d", i) }
	for i, s := range out.Shards[:6] {
		owner := fmt.Sprintf("other-%d", i)
		if i == 5 {
			owner = "late"
		}
		_, err := f.db.PutItem(t.Context(), &dynamodb.PutItemInput{TableName: aws.String(f.table), Item: map[string]dtypes.AttributeValue{
			AttrShardID: str(aws.ToString(s.ShardId)), AttrOwner: str(owner), AttrCounter: num(1),
			AttrCheckpoint: str(checkpointOf(i)),
		}})
		require.NoError(t, err)
	}
	r := f.start(t, "late", replicaOptions{lease: 20 * time.Second})
	testwait.Eventually(t, func() bool { return len(r.acquiredShards()) >= 6 }, 10*time.Second, 20*time.Millisecond)
	testwait.Eventually(t, func() bool {
		return slices.ContainsFunc(r.acquiredShards(), func(s Shard) bool { return s.ID == ours })
	}, 3*time.Second, 20*time.Millisecond, "the lease handed over is taken within a pass, not after the others' 20 s leases")
	held := map[string]bool{}
	for _, s := range r.acquiredShards() {
		held[s.ID] = true
		if s.ID == ours {
			assert.Equal(t, checkpointOf(5), s.Checkpoint, "from the checkpoint it was handed with")
		}
	}
	assert.Len(t, held, 6, "its share, the handed-over lease included")
}

// TestClaimHonouredAsTheClaimantClosesIsGivenBack: a claimant that closes after its claim was
// honoured, but before it took the lease, gives the lease back, so that another worker reads the
// shard at its next pass instead of after the lease duration.
func TestClaimHonouredAsTheClaimantClosesIsGivenBack(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	const lease = 10 * time.Second
	a := f.start(t, "a", replicaOptions{lease: lease})
	testwait.Eventually(t, func() bool { return len(a.c.Held()) == 2 }, 20*time.Second, 20*time.Millisecond)

	// b's first pass claims one lease; its next pass is an hour away, so it never takes it.
	b := f.start(t, "b", replicaOptions{lease: lease, pass: time.Hour})
	testwait.Eventually(t, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.handed == 1
	}, 10*time.Second, 20*time.Millisecond, "a hands one lease over to b")
	owners, _ := f.owners(t)
	require.Equal(t, map[string]int{"a": 1, "b": 1}, countBy(owners))
	require.Empty(t, b.acquiredShards())

	closed := time.Now()
	b.stop(t)
	testwait.Eventually(t, func() bool { return len(a.c.Held()) == 2 }, lease/2, 20*time.Millisecond,
		"a reads the shard again well within the lease duration")
	t.Logf("a took the lease back %v after b closed", time.Since(closed).Round(time.Millisecond))
}
