package kinesis

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
)

// TestCheckpointIntervalSetsHowOftenABusyShardWritesItsCheckpoint: one busy shard, records every
// 50 ms, leases renewed rarely (a 30 s lease): the lease-table writes over 3 s are the checkpoints,
// about one per checkpointInterval. What an operator sees on the bill.
func TestCheckpointIntervalSetsHowOftenABusyShardWritesItsCheckpoint(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		interval string
		atLeast  int
		atMost   int
	}{
		{"100ms", 10, 40}, // about 30 in 3 s
		{"10m", 0, 2},     // none but the first, and a renewal at most
	} {
		t.Run(tc.interval, func(t *testing.T) {
			t.Parallel()
			srv := localaws.Get(t)
			stream := localaws.NewStream(t, 1)
			client := srv.KinesisClient()
			meter := localaws.NewDynamoDBMeter(t, srv.DynamoDBEndpoint)
			props := shProps(t, stream, localaws.UniqueName("cp"), "leaseDuration", "30s", "checkpointInterval", tc.interval)
			props["dynamoDBEndpoint"] = meter.URL()
			rec := &shRecorder{}
			shStart(t, props, rec.handler("a"))
			stopPuts := shPutLoop(t, client, stream, shShardKeys(t, client, stream), "cp")
			defer stopPuts()
			testwait.Eventually(t, func() bool { return len(rec.snapshot()) > 5 }, 30*time.Second, 20*time.Millisecond, "records flow")

			before := meter.Reading()
			time.Sleep(3 * time.Second)
			writes := meter.Reading().Since(before)["UpdateItem"].Calls
			t.Logf("checkpointInterval %s: %d lease-table writes in 3 s", tc.interval, writes)
			require.NotEmpty(t, rec.snapshot())
			assert.GreaterOrEqual(t, writes, tc.atLeast)
			assert.LessOrEqual(t, writes, tc.atMost)
		})
	}
}
