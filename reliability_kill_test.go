//go:build linux

package kinesis

import (
	"testing"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
)

// TestSharedKilledReplicaIsTakenOver: a replica in another process (reliability_crash_child_test.go) shares the
// stream with one in this process and is SIGKILLed, leaving its leases held. The survivor must own
// every shard within the lease duration plus a few seconds, and every record must be delivered by
// one or the other.
func TestSharedKilledReplicaIsTakenOver(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 4)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("killed")
	keys := shShardKeys(t, client, stream)
	const lease = 4 * time.Second
	props := func(worker string) map[string]string {
		return shProps(t, stream, consumer, "workerID", worker, "leaseDuration", lease.String())
	}

	stopPuts := shPutLoop(t, client, stream, keys, "k")

	other := startChild(t, "replica", "consumer", props("child"))
	testwait.Eventually(t, func() bool {
		owners, _ := shLeases(t, consumer)
		return ownedBy(owners)["child"] == 4
	}, 20*time.Second, 100*time.Millisecond, "the child process owns the stream")
	rec := &shRecorder{}
	shStart(t, props("parent"), rec.handler("parent"))
	testwait.Eventually(t, func() bool {
		c := ownedBy(shOwners(t, consumer))
		return c["parent"] >= 1 && c["child"] >= 1
	}, 20*time.Second, 100*time.Millisecond, "the replicas share the stream")

	other.kill()
	killedAt := time.Now()
	testwait.Eventually(t, func() bool {
		return ownedBy(shOwners(t, consumer))["parent"] == 4
	}, lease+5*time.Second, 100*time.Millisecond, "the survivor owns the killed replica's shards within the lease plus a few seconds")
	t.Logf("takeover %v after SIGKILL (lease %v)", time.Since(killedAt).Round(time.Millisecond), lease)

	time.Sleep(500 * time.Millisecond)
	all := dataOf(stopPuts())
	for _, data := range other.protocol("R") {
		rec.add(shCall{data: data, worker: "child"})
	}
	rec.waitDelivered(t, all, 30*time.Second)
}
