package leases

import (
	"errors"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/testwait"
)

// cutter stands for a network cut between one replica and DynamoDB: once cut, its requests hang
// until their context ends or, as the binding bounds every lease-table request, a second passed.
type cutter struct {
	next aws.HTTPClient
	cut  atomic.Bool
}

func (c *cutter) Do(req *http.Request) (*http.Response, error) {
	if c.cut.Load() {
		select {
		case <-req.Context().Done():
			return nil, req.Context().Err()
		case <-time.After(time.Second):
			return nil, errors.New("cut off: request timed out")
		}
	}
	return c.next.Do(req)
}

// onDynamoDB and onKinesis put the cutter between a client and the network.
func (c *cutter) onDynamoDB(o *dynamodb.Options) { c.next, o.HTTPClient = o.HTTPClient, c }
func (c *cutter) onKinesis(o *kinesis.Options)   { c.next, o.HTTPClient = o.HTTPClient, c }

// heartbeatItem reads the heartbeat item as an operator would.
func (f *fixture) heartbeatItem(t *testing.T) roster {
	t.Helper()
	out, err := f.db.GetItem(t.Context(), &dynamodb.GetItemInput{
		TableName: aws.String(f.table), Key: shardKey(HeartbeatKey), ConsistentRead: aws.Bool(true),
	})
	require.NoError(t, err)
	return parseRoster(out.Item)
}

// TestReplicaCutOffFromTheTableStopsBeforeAnotherTakesOver: a replica whose heartbeats cannot reach
// the table stops delivering its shards before the other replica takes any of them, and the other
// owns them all within the lease duration and a couple of seconds.
func TestReplicaCutOffFromTheTableStopsBeforeAnotherTakesOver(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 8)
	const lease = 3 * time.Second
	network := &cutter{}
	cut := f.start(t, "cut", replicaOptions{lease: lease, db: network.onDynamoDB})
	other := f.start(t, "other", replicaOptions{lease: lease})
	testwait.Eventually(t, func() bool {
		owners, _ := f.owners(t)
		return fair(countBy(owners), 8, "cut", "other")
	}, 20*time.Second, 50*time.Millisecond)
	time.Sleep(lease) // past the passes that follow the start-up
	held := map[string]bool{}
	for _, l := range cut.c.Held() {
		held[l.Shard().ID] = true
	}
	require.Len(t, held, 4)

	network.cut.Store(true)
	cutAt := time.Now()
	testwait.Eventually(t, func() bool { return len(other.c.Held()) == 8 }, lease+2*time.Second, 20*time.Millisecond,
		"the other replica owns every shard within the lease duration and two seconds")
	t.Logf("the other replica owned every shard %v after the cut (lease %v)", time.Since(cutAt).Round(time.Millisecond), lease)

	cut.mu.Lock()
	lostAt := maps.Clone(cut.lostAt)
	cut.mu.Unlock()
	other.mu.Lock()
	takenAt := maps.Clone(other.acquiredAt)
	other.mu.Unlock()
	for id := range held {
		require.Contains(t, lostAt, id, "%s: the cut replica stopped delivering it", id)
		assert.True(t, lostAt[id].Before(takenAt[id]), "%s: stopped at +%v, taken over at +%v", id,
			lostAt[id].Sub(cutAt).Round(time.Millisecond), takenAt[id].Sub(cutAt).Round(time.Millisecond))
		assert.Less(t, lostAt[id].Sub(cutAt), 2*lease/3+100*time.Millisecond, "%s: stopped within 2/3 of the lease", id)
	}
}

// TestReplicaBackFromACutTakesBackWhatTheTableStillNamesItFor: a replica cut off for less than the
// lease duration (long enough to stop delivering, too short for the others to take over) reads its
// shards again once its heartbeats go through.
func TestReplicaBackFromACutTakesBackWhatTheTableStillNamesItFor(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 4)
	const lease = 3 * time.Second
	network := &cutter{}
	r := f.start(t, "flaky", replicaOptions{lease: lease, db: network.onDynamoDB})
	testwait.Eventually(t, func() bool { return len(r.c.Held()) == 4 }, 20*time.Second, 20*time.Millisecond)
	network.cut.Store(true)
	testwait.Eventually(t, func() bool { return len(r.c.Held()) == 0 }, lease, 20*time.Millisecond, "stopped delivering")
	network.cut.Store(false)
	testwait.Eventually(t, func() bool { return len(r.c.Held()) == 4 }, lease, 20*time.Millisecond, "reads its shards again")
	assert.Len(t, r.acquiredShards(), 8, "each shard taken twice: before the cut and after")
}

// TestLeaseOfAReplicaWithoutHeartbeatLivesWhileItIsRenewed: a replica of an earlier version (or
// upstream's) proves its lease alive only by renewing it; a replica with heartbeats leaves it
// alone while it does, and takes it a lease duration after the renewals stop.
func TestLeaseOfAReplicaWithoutHeartbeatLivesWhileItIsRenewed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	out, err := f.kinesis.ListShards(t.Context(), &kinesis.ListShardsInput{StreamName: aws.String(f.stream)})
	require.NoError(t, err)
	old := aws.ToString(out.Shards[0].ShardId)
	renew := func(n int64) {
		_, err := f.db.PutItem(t.Context(), &dynamodb.PutItemInput{TableName: aws.String(f.table), Item: map[string]dtypes.AttributeValue{
			AttrShardID: str(old), AttrOwner: str("older-version"), AttrCounter: num(n),
		}})
		require.NoError(t, err)
	}
	renew(1)
	const lease = 2 * time.Second
	r := f.start(t, "new", replicaOptions{lease: lease, noStealing: true})
	testwait.Eventually(t, func() bool { return len(r.c.Held()) == 1 }, 10*time.Second, 20*time.Millisecond, "the free shard")

	for n := int64(2); n <= 10; n++ { // 3 s of renewals every lease/6
		time.Sleep(lease / 6)
		renew(n)
	}
	owners, _ := f.owners(t)
	require.Equal(t, "older-version", owners[old], "a renewed lease is left alone")
	stopped := time.Now()
	testwait.Eventually(t, func() bool { return len(r.c.Held()) == 2 }, lease+2*time.Second, 20*time.Millisecond,
		"taken once seen unrenewed for the lease duration")
	t.Logf("taken %v after its renewals stopped (lease %v)", time.Since(stopped).Round(time.Millisecond), lease)
}

// TestReplicasOfBothProtocolsShareAndStayPut: during an upgrade, replicas with leaseProtocol
// renewal and heartbeat share the table; neither takes a live lease of the other.
func TestReplicasOfBothProtocolsShareAndStayPut(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 12)
	const lease = 3 * time.Second
	f.start(t, "hb-1", replicaOptions{lease: lease})
	f.start(t, "renewing", replicaOptions{lease: lease, protocol: ProtocolRenewal})
	f.start(t, "hb-2", replicaOptions{lease: lease})
	var settled map[string]string
	testwait.Eventually(t, func() bool {
		settled, _ = f.owners(t)
		return fair(countBy(settled), 12, "hb-1", "renewing", "hb-2")
	}, 20*time.Second, 50*time.Millisecond, "12 shards split 4/4/4")
	testwait.Never(t, func() bool {
		owners, _ := f.owners(t)
		return !maps.Equal(owners, settled)
	}, 3*lease, 100*time.Millisecond, "no live lease changes hands")
}

// TestClosedReplicaLeavesTheHeartbeats: Close removes the replica's heartbeat and announces it, so
// the others count it out at once; a crashed replica's heartbeat is forgotten once it stood still
// long enough.
func TestClosedReplicaLeavesTheHeartbeats(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	const lease = 2 * time.Second
	stays := f.start(t, "stays", replicaOptions{lease: lease})
	stays.c.forgetDeadAfter = 0 // the floor, two lease durations
	closes := f.start(t, "closes", replicaOptions{lease: lease})
	crashes := f.start(t, "crashes", replicaOptions{lease: lease})
	testwait.Eventually(t, func() bool { return len(f.heartbeatItem(t).beats) == 3 }, 10*time.Second, 20*time.Millisecond)
	gen := f.heartbeatItem(t).generation

	closes.stop(t)
	hb := f.heartbeatItem(t)
	assert.NotContains(t, hb.beats, "closes", "Close removes the heartbeat")
	assert.Greater(t, hb.generation, gen, "and announces it")

	crashes.abandon()
	<-crashes.done
	crashed := time.Now()
	testwait.Eventually(t, func() bool {
		_, there := f.heartbeatItem(t).beats["crashes"]
		return !there
	}, 2*lease+3*time.Second, 50*time.Millisecond, "a heartbeat stopped for two lease durations is forgotten")
	t.Logf("the crashed replica's heartbeat was forgotten %v after the crash", time.Since(crashed).Round(time.Millisecond))
	assert.Contains(t, f.heartbeatItem(t).beats, "stays")
}

// TestReplicaThatBeatsButCannotTakeKeepsNoShardUnread: a replica whose heartbeats go through but
// whose passes fail (here it cannot list the stream; a policy without dynamodb:Scan does the same)
// counts for the fair share only while it has just joined: then the other reads every shard.
func TestReplicaThatBeatsButCannotTakeKeepsNoShardUnread(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 6)
	const lease = 2 * time.Second
	network := &cutter{}
	network.cut.Store(true)
	f.start(t, "blind", replicaOptions{lease: lease, kinesis: network.onKinesis})
	testwait.Eventually(t, func() bool { return len(f.heartbeatItem(t).beats) == 1 }, 10*time.Second, 20*time.Millisecond)
	working := f.start(t, "working", replicaOptions{lease: lease})
	testwait.Eventually(t, func() bool { return len(working.c.Held()) == 6 }, 2*lease+5*time.Second, 20*time.Millisecond,
		"the working replica reads every shard once the blind one has had its time to join")
	assert.Contains(t, f.heartbeatItem(t).beats, "blind", "the blind replica still beats")
}

// denyGetItem answers every GetItem as DynamoDB does for a policy without dynamodb:GetItem.
type denyGetItem struct{ next aws.HTTPClient }

func (d *denyGetItem) Do(req *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(req.Header.Get("X-Amz-Target"), ".GetItem") {
		return d.next.Do(req)
	}
	body := `{"__type":"com.amazon.coral.service#AccessDeniedException","message":"not authorized to perform: dynamodb:GetItem"}`
	return &http.Response{
		StatusCode: http.StatusBadRequest, Status: "400 Bad Request", Request: req,
		Header: http.Header{"Content-Type": []string{"application/x-amz-json-1.0"}},
		Body:   io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
	}, nil
}

// TestReplicaDeniedGetItemStillSeesChanges: with a policy written for earlier versions (no
// dynamodb:GetItem), a replica scans every step instead of reading the heartbeat item alone, and
// still takes over a crashed replica's shards on time.
func TestReplicaDeniedGetItemStillSeesChanges(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 4)
	const lease = 2 * time.Second
	denied := f.start(t, "denied", replicaOptions{lease: lease, db: func(o *dynamodb.Options) {
		o.HTTPClient = &denyGetItem{next: o.HTTPClient}
	}})
	other := f.start(t, "other", replicaOptions{lease: lease})
	testwait.Eventually(t, func() bool {
		owners, _ := f.owners(t)
		return fair(countBy(owners), 4, "denied", "other")
	}, 20*time.Second, 50*time.Millisecond)
	other.abandon()
	<-other.done
	crashed := time.Now()
	testwait.Eventually(t, func() bool { return len(denied.c.Held()) == 4 }, lease+2*time.Second, 20*time.Millisecond,
		"the crashed replica's shards are taken within the lease duration and two seconds")
	t.Logf("taken over %v after the crash", time.Since(crashed).Round(time.Millisecond))
	assert.Greater(t, denied.counter.snapshot()["Scan"], int(lease/(200*time.Millisecond)), "a scan every step")
}
