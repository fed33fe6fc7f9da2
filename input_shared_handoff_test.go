package kinesis

import (
	"maps"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/leases"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
)

// TestSharedPlannedJoinAndCloseDeliverNothingTwice: a replica joining a running one gets its share
// by graceful handoff (the owner finishes the call in flight, checkpoints and hands the lease over
// in one write), and a replica closing releases with its final checkpoint: with records flowing
// all along, every record is delivered exactly once.
func TestSharedPlannedJoinAndCloseDeliverNothingTwice(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 4)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("handoff")
	keys := shShardKeys(t, client, stream)
	props := func(worker string) map[string]string {
		return shProps(t, stream, consumer, "workerID", worker, "leaseDuration", "10s")
	}
	rec := &shRecorder{}
	stopPuts := shPutLoop(t, client, stream, keys, "h")

	shStart(t, props("h1"), rec.handler("h1"))
	testwait.Eventually(t, func() bool { return ownedBy(shOwners(t, consumer))["h1"] == 4 }, 10*time.Second, 50*time.Millisecond)
	time.Sleep(time.Second)

	joined := time.Now()
	h2 := shStart(t, props("h2"), rec.handler("h2"))
	testwait.Eventually(t, func() bool {
		c := ownedBy(shOwners(t, consumer))
		return c["h1"] == 2 && c["h2"] == 2 && shClaims(t, consumer) == 0
	}, 10*time.Second, 50*time.Millisecond, "the joiner gets its share by handoff")
	t.Logf("shares fair %v after the second replica's Read", time.Since(joined).Round(time.Millisecond))
	testwait.Eventually(t, func() bool {
		for _, c := range rec.snapshot() {
			if c.worker == "h2" {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "the joiner delivers from the shards handed over")
	time.Sleep(time.Second)

	require.NoError(t, h2.Close())
	testwait.Eventually(t, func() bool { return ownedBy(shOwners(t, consumer))["h1"] == 4 }, 10*time.Second, 50*time.Millisecond)
	time.Sleep(time.Second)

	all := dataOf(stopPuts())
	rec.waitDelivered(t, all, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	byWorker := map[string]int{}
	for _, c := range rec.snapshot() {
		byWorker[c.worker]++
	}
	assert.Positive(t, byWorker["h2"], "the joiner delivered records")
	for data, n := range rec.delivered() {
		assert.Equal(t, 1, n, "%s delivered once", data)
	}
}

// TestSharedLostLeaseStopsDeliveryAtOnce: when the lease table shows another owner (here the test
// writes one, as a replica that judged the lease dead would), the replica stops delivering that
// shard and writes no checkpoint for it; once the other owner's lease has gone unrenewed for the
// lease duration, the replica takes the shard back and delivers from the last checkpoint.
func TestSharedLostLeaseStopsDeliveryAtOnce(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("lost")
	const lease = 3 * time.Second
	rec := &shRecorder{}
	shStart(t, shProps(t, stream, consumer, "workerID", "owner", "leaseDuration", lease.String()), rec.handler("owner"))
	before := shPutOn(t, client, stream, "0", "before")
	rec.waitDelivered(t, dataOf(before), 20*time.Second)
	testwait.Eventually(t, func() bool {
		_, cps := shLeases(t, consumer)
		return cps[before[0].shardID] == before[0].seq
	}, 10*time.Second, 50*time.Millisecond)
	time.Sleep(lease) // past the passes that follow the start-up: only the heartbeat item tells of a change

	_, err := localaws.Get(t).DynamoDBClient().UpdateItem(t.Context(), &dynamodb.UpdateItemInput{
		TableName:                 aws.String(consumer),
		Key:                       map[string]dtypes.AttributeValue{leases.AttrShardID: &dtypes.AttributeValueMemberS{Value: before[0].shardID}},
		UpdateExpression:          aws.String("SET #owner = :thief ADD #counter :one"),
		ExpressionAttributeNames:  map[string]string{"#owner": leases.AttrOwner, "#counter": leases.AttrCounter},
		ExpressionAttributeValues: map[string]dtypes.AttributeValue{":thief": &dtypes.AttributeValueMemberS{Value: "thief"}, ":one": &dtypes.AttributeValueMemberN{Value: "1"}},
	})
	require.NoError(t, err)
	// As a replica of this binding does after changing a lease: announce it in the heartbeat item.
	_, err = localaws.Get(t).DynamoDBClient().UpdateItem(t.Context(), &dynamodb.UpdateItemInput{
		TableName:                 aws.String(consumer),
		Key:                       map[string]dtypes.AttributeValue{leases.AttrShardID: &dtypes.AttributeValueMemberS{Value: leases.HeartbeatKey}},
		UpdateExpression:          aws.String("ADD #gen :one"),
		ExpressionAttributeNames:  map[string]string{"#gen": leases.AttrGeneration},
		ExpressionAttributeValues: map[string]dtypes.AttributeValue{":one": &dtypes.AttributeValueMemberN{Value: "1"}},
	})
	require.NoError(t, err)
	taken := time.Now()
	// Within a step (shardSyncInterval) and a pass the owner learns it lost the shard; give it
	// more than that, then put.
	time.Sleep(lease / 2)
	after := shPutOn(t, client, stream, "0", "after")
	time.Sleep(lease / 4)
	assert.Zero(t, rec.delivered()["after"], "nothing is delivered for a shard whose lease was lost")
	owners, cps := shLeases(t, consumer)
	assert.Equal(t, "thief", owners[before[0].shardID])
	assert.Equal(t, before[0].seq, cps[before[0].shardID], "no checkpoint is written for it")

	// The thief never renews: after the lease duration, by the owner's own clock, the shard is free.
	rec.waitDelivered(t, dataOf(after), 20*time.Second)
	t.Logf("taken back and delivered %v after the lease was taken", time.Since(taken).Round(time.Millisecond))
	owners, _ = shLeases(t, consumer)
	assert.Equal(t, "owner", owners[before[0].shardID])
	assert.Equal(t, map[string]int{"before": 1, "after": 1}, rec.delivered())
}

// TestSharedReplicasWithClocksApartKeepTheirLeases: one replica's clock runs 30 s ahead, the other's
// 30 s behind, so each writes lease timeouts the other would read as long expired or far in the
// future. Expiry is judged by renewals seen on the local monotonic clock, so neither takes a live
// lease from the other, and when the one ahead is cut off the network (it dies, holding its leases
// with timeouts a minute in the future by the other's clock), the other owns its shards within the
// lease duration plus a pass or two.
func TestSharedReplicasWithClocksApartKeepTheirLeases(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 4)
	consumer := localaws.UniqueName("skew")
	const lease = 2 * time.Second
	props := func(worker string) map[string]string {
		return shProps(t, stream, consumer, "workerID", worker, "leaseDuration", lease.String())
	}
	skewed := func(d time.Duration) func(*AWSKinesis) {
		return func(b *AWSKinesis) { b.wallClock = func() time.Time { return time.Now().Add(d) } }
	}
	rec := &shRecorder{}
	network := newFanoutFixClient()
	shStart(t, props("ahead"), rec.handler("ahead"), skewed(30*time.Second), func(b *AWSKinesis) { b.sdkHTTPClient = network })
	shStart(t, props("behind"), rec.handler("behind"), skewed(-30*time.Second))

	var settled map[string]string
	testwait.Eventually(t, func() bool {
		settled = shOwners(t, consumer)
		c := ownedBy(settled)
		return c["ahead"] == 2 && c["behind"] == 2 && shClaims(t, consumer) == 0
	}, 15*time.Second, 50*time.Millisecond, "the replicas share the shards")
	testwait.Never(t, func() bool {
		return !maps.Equal(shOwners(t, consumer), settled)
	}, 4*lease, 100*time.Millisecond, "no live lease changes hands over several lease durations")

	network.kill()
	died := time.Now()
	testwait.Eventually(t, func() bool { return ownedBy(shOwners(t, consumer))["behind"] == 4 }, lease+3*time.Second, 50*time.Millisecond,
		"the dead replica's shards are taken after the lease, though their timeouts lie a minute ahead by the taker's clock")
	t.Logf("taken over %v after the replica died (lease %v)", time.Since(died).Round(time.Millisecond), lease)
}
