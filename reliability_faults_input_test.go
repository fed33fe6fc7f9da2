package kinesis

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/faultproxy"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

// The input side under faults. Each scenario runs one consumer (one Read, never repeated) through
// fault proxies in front of Kinesis and DynamoDB while known records are put, and then requires
// every record delivered, in order per partition key, with duplicates only as replays. What makes
// these tests fail: a lost record, a record skipped and never redelivered, a consumer that does
// not recover by itself once the fault ends.

// inputRig is what a fault acts on.
type inputRig struct {
	srv             *localaws.Servers
	kinesis, dynamo *faultproxy.Proxy
}

// inputFault starts a fault while records are being put and returns the function that ends it.
type inputFault func(t *testing.T, rig inputRig) (heal func())

const (
	faultLanes = 4
	// Delivery waits are generous: a lease lost to a fault is retaken only once it expires, and the
	// machine is a loaded 2-core box.
	firstDeliveryTimeout = 60 * time.Second
	recoveryTimeout      = 90 * time.Second
)

// runInputScenario: batch A is put and awaited (the consumer holds its leases and reads), batch B
// is put without waiting (records in flight when the fault starts), the fault starts, batch C is
// put paced while it lasts, the fault heals, batch D is put, and everything must arrive.
func runInputScenario(t *testing.T, mode consumerMode, srv *localaws.Servers, fault inputFault, configure ...func(*AWSKinesis)) atLeastOnce {
	t.Helper()
	stream := localaws.NewStreamOn(t, srv, 2)
	rig := inputRig{
		srv:     srv,
		kinesis: newFaultProxy(t, srv.KinesisEndpoint),
		dynamo:  newFaultProxy(t, srv.DynamoDBEndpoint),
	}
	props := withConsumer(serverProps(srv, stream, rig.kinesis.URL(), rig.dynamo.URL()), mode)
	if mode == modeExtended {
		props["shardSyncInterval"] = "200ms" // as input_extended_test.go: leases taken quickly
	}
	t.Cleanup(func() { logLeasesOnFailure(t, srv, props["consumerName"]) })
	b := newBinding(t, props, configure...)
	rec := newRecorder()
	require.NoError(t, b.Read(t.Context(), rec.handle))

	client := srv.KinesisClient()
	prefix := "r"
	sent, err := putLanes(t.Context(), client, stream, prefix, faultLanes, 0, 10)
	require.NoError(t, err)
	rec.waitFor(t, sent, firstDeliveryTimeout)

	batchB, err := putLanes(t.Context(), client, stream, prefix, faultLanes, 10, 30)
	require.NoError(t, err)
	sent = append(sent, batchB...)

	heal := fault(t, rig)
	sent = append(sent, producePaced(t, client, stream, prefix, faultLanes, 30, 60, 5, 250*time.Millisecond)...)
	heal()

	// Records put after the fault show the consumer recovered without a new Read.
	batchD, err := putLanes(t.Context(), client, stream, prefix, faultLanes, 90, 100)
	require.NoError(t, err)
	sent = append(sent, batchD...)
	rec.waitFor(t, sent, recoveryTimeout)
	return checkAtLeastOnce(t, sent, rec.deliveries())
}

// heldFor returns a heal that ends the fault no sooner than d after it began, so that an outage
// outlasts the lease (3 s) however fast the records were put.
func heldFor(d time.Duration, end func()) func() {
	began := time.Now()
	return func() {
		time.Sleep(time.Until(began.Add(d)))
		end()
	}
}

// networkFaults are the faults between the binding and the servers, for either mode.
func networkFaults() map[string]inputFault {
	return map[string]inputFault{
		// Every connection to both servers cut twice a second: reads (GetRecords or fan-out
		// subscriptions), lease renewals and checkpoints break mid-request and mid-stream.
		"connections cut": func(t *testing.T, rig inputRig) func() {
			rig.kinesis.SetLatency(20 * time.Millisecond) // so that cuts find requests in flight
			stop := cutEvery(t, 500*time.Millisecond, rig.kinesis, rig.dynamo)
			return func() {
				cuts := stop()
				rig.kinesis.SetLatency(0)
				t.Logf("%d rounds of cuts hit open connections", cuts)
				assert.Positive(t, cuts, "the fault must have happened")
			}
		},
		// 150 ms each way on every Kinesis and DynamoDB exchange.
		"latency": func(_ *testing.T, rig inputRig) func() {
			rig.kinesis.SetLatency(150 * time.Millisecond)
			rig.dynamo.SetLatency(150 * time.Millisecond)
			return func() { rig.kinesis.SetLatency(0); rig.dynamo.SetLatency(0) }
		},
		// DynamoDB down (connections refused) for longer than the lease: renewals and
		// checkpoints fail, the lease expires, and the consumer must take it back and go on.
		"dynamodb refused": func(_ *testing.T, rig inputRig) func() {
			rig.dynamo.Refuse()
			return heldFor(8*time.Second, rig.dynamo.Resume)
		},
		// DynamoDB unreachable without an answer (a partition) for longer than the lease.
		"dynamodb partitioned": func(_ *testing.T, rig inputRig) func() {
			rig.dynamo.Blackhole()
			return heldFor(8*time.Second, rig.dynamo.Resume)
		},
	}
}

// leaseKept names the faults under which a consumer keeps its leases: nothing is replayed, so a
// duplicate would have no at-least-once explanation.
var leaseKept = map[string]bool{"latency": true}

func TestSharedInputSurvivesFaults(t *testing.T) {
	t.Parallel()
	srv := localaws.Get(t)
	for name, fault := range networkFaults() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res := runInputScenario(t, modeShared, srv, fault)
			if leaseKept[name] {
				assert.Zero(t, res.duplicates, "no lease was lost, so nothing may be delivered twice")
			}
		})
	}
}

// TestExtendedInputSurvivesFaults: the same faults under enhanced fan-out, where a cut ends a
// subscription mid-stream. Reads go through fanoutFixClient (input_extended_fanoutfix_test.go),
// which gives kinesis-local's SubscribeToShard the initial event the SDK needs.
func TestExtendedInputSurvivesFaults(t *testing.T) {
	t.Parallel()
	srv := localaws.Get(t)
	for name, fault := range networkFaults() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res := runInputScenario(t, modeExtended, srv, fault, func(b *AWSKinesis) { b.sdkHTTPClient = newFanoutFixClient() })
			if leaseKept[name] {
				assert.Zero(t, res.duplicates, "no lease was lost, so nothing may be delivered twice")
			}
		})
	}
}

// TestInputSurvivesKinesisRestart restarts kinesis-local, keeping its data, under a running
// consumer: its connections break, new ones are refused for a few seconds, and the iterators or
// subscriptions it held belong to a server that is gone.
func TestInputSurvivesKinesisRestart(t *testing.T) {
	t.Parallel()
	restart := func(t *testing.T, rig inputRig) func() {
		began := time.Now()
		require.NoError(t, rig.srv.RestartKinesis(t.Context()))
		t.Logf("kinesis-local restarted in %v", time.Since(began).Round(time.Millisecond))
		return func() {}
	}
	t.Run("shared", func(t *testing.T) {
		t.Parallel()
		runInputScenario(t, modeShared, privateServers(t), restart)
	})
	t.Run("extended", func(t *testing.T) {
		t.Parallel()
		runInputScenario(t, modeExtended, privateServers(t), restart, func(b *AWSKinesis) { b.sdkHTTPClient = newFanoutFixClient() })
	})
}

// TestSharedInputSurvivesGetRecordsThrottling throttles GetRecords, which no emulator does: a run
// of consecutive rejections, then every third call.
func TestSharedInputSurvivesGetRecordsThrottling(t *testing.T) {
	t.Parallel()
	var throttling atomic.Bool
	var throttledCalls atomic.Int64
	faults := newFaultClient(func(op string, call int, req *http.Request) *http.Response {
		if op == "GetRecords" && throttling.Load() && (call%3 == 0 || call%50 < 4) {
			throttledCalls.Add(1)
			return throttled(req)
		}
		return nil
	})
	runInputScenario(t, modeShared, localaws.Get(t), func(*testing.T, inputRig) func() {
		throttling.Store(true)
		return heldFor(5*time.Second, func() { throttling.Store(false) })
	}, func(b *AWSKinesis) { b.sdkHTTPClient = faults })
	t.Logf("%d of %d GetRecords calls throttled", throttledCalls.Load(), faults.count("GetRecords"))
	require.Positive(t, throttledCalls.Load(), "the consumer's GetRecords must go through the binding's SDK client")
}
