package kinesis

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

// Not parallel: it checks that no goroutine of the binding outlives Close, so nothing else may run.
// The lease table stops answering (every request hangs) while the binding holds all its leases:
// Close must still return within its 5 s and leave no shard reader, renewer or request behind,
// though the final lease writes cannot be made (the leases then expire, as each shard logs).
func TestCloseWithAStalledLeaseTableIsPromptAndLeavesNothingRunning(t *testing.T) {
	srv := localaws.Get(t)
	for _, mode := range []consumerMode{modeShared, modeExtended} {
		t.Run(string(mode), func(t *testing.T) {
			ignore := append(leakIgnores(), goleak.IgnoreCurrent(),
				// The proxy's own goroutines hold the stalled connections until its Close.
				goleak.IgnoreAnyFunction("github.com/dapr-kinesis/kinesis/internal/faultproxy.(*Proxy).serve"),
				goleak.IgnoreAnyFunction("github.com/dapr-kinesis/kinesis/internal/faultproxy.(*Proxy).forward"),
				goleak.IgnoreAnyFunction("github.com/dapr-kinesis/kinesis/internal/faultproxy.(*Proxy).write"),
				goleak.IgnoreAnyFunction("github.com/dapr-kinesis/kinesis/internal/faultproxy.(*Proxy).acceptLoop"))
			stream := localaws.NewStream(t, 4)
			client := srv.KinesisClient()
			table := newFaultProxy(t, srv.DynamoDBEndpoint)
			consumer := localaws.UniqueName("stall")
			props := shProps(t, stream, consumer, "mode", string(mode), "dynamoDBEndpoint", table.URL())

			rec := &shRecorder{}
			b := shStart(t, props, rec.handler("w"), withFanoutFix(mode)...)

			keys := shShardKeys(t, client, stream)
			want := make([]string, 0, len(keys))
			for id, key := range keys {
				want = append(want, "before-"+id)
				shPutOn(t, client, stream, key, "before-"+id)
			}
			rec.waitDelivered(t, want, 30*time.Second)
			require.Len(t, ownedBy(shOwners(t, consumer)), 1, "one worker owns the shards")

			table.Blackhole()
			time.Sleep(300 * time.Millisecond) // renewals and checkpoints now hang in flight

			closing := time.Now()
			err := b.Close()
			took := time.Since(closing)
			// The failed final writes are logged (each shard says its lease will expire), not returned.
			t.Logf("Close took %v: %v", took.Round(time.Millisecond), err)
			assert.Less(t, took, 5*time.Second, "Close returns within 5 s")

			closeIdleTestConnections(srv)
			goleak.VerifyNone(t, ignore...)
			table.Resume()
		})
	}
}
