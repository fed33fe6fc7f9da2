package kinesis

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	kplrecords "github.com/awslabs/kinesis-aggregation/go/v2/records"
	"github.com/golang/protobuf/proto" //nolint:staticcheck // the KPL record types are generated for it
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dapr-kinesis/kinesis/internal/leases"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/position"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"
)

// Shared-mode tests run the engine against kinesis-local and dynalite. Leases are short (3-6 s) and shard
// syncs frequent so that the tests stay quick; the time bounds asserted are the contract's (start,
// takeover, Close), with margins for a loaded two-core machine.

// shProps is the metadata of a shared-mode binding on the local servers, reading from the start of
// the stream. kv overrides or, with an empty value, removes entries.
func shProps(t testing.TB, stream, consumer string, kv ...string) map[string]string {
	p := localProps(t, stream)
	p["consumerName"] = consumer
	p["mode"] = "shared"
	p["initialPosition"] = "TRIM_HORIZON"
	p["leaseDuration"] = "3s"
	p["shardSyncInterval"] = "250ms"
	p["pollInterval"] = "200ms"
	p["retryInitialInterval"] = "20ms"
	p["retryMaxInterval"] = "200ms"
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(p, kv[i])
		} else {
			p[kv[i]] = kv[i+1]
		}
	}
	return p
}

func metadataBase(props map[string]string) metadata.Base {
	return metadata.Base{Properties: props}
}

// shStart initialises a binding, starts its input and closes it when the test ends.
func shStart(t testing.TB, props map[string]string, handler bindings.Handler, configure ...func(*AWSKinesis)) *AWSKinesis {
	t.Helper()
	b := NewAWSKinesis(logger.NewLogger(t.Name())).(*AWSKinesis)
	for _, c := range configure {
		c(b)
	}
	require.NoError(t, b.Init(t.Context(), bindings.Metadata{Base: metadataBase(props)}))
	t.Cleanup(func() { _ = b.Close() })
	require.NoError(t, b.Read(t.Context(), handler))
	return b
}

// shCall is one handler call.
type shCall struct {
	data   string
	md     map[string]string
	failed bool
	worker string
}

// shRecorder records the handler calls of one or more bindings; fail, if set, decides a call's
// outcome from its overall number (1-based) and record.
type shRecorder struct {
	mu    sync.Mutex
	calls []shCall
	fail  func(n int, data string) error
}

func (r *shRecorder) handler(worker string) bindings.Handler {
	return func(_ context.Context, resp *bindings.ReadResponse) ([]byte, error) {
		r.mu.Lock()
		n := len(r.calls) + 1
		var err error
		if r.fail != nil {
			err = r.fail(n, string(resp.Data))
		}
		r.calls = append(r.calls, shCall{data: string(resp.Data), md: resp.Metadata, failed: err != nil, worker: worker})
		r.mu.Unlock()
		return nil, err
	}
}

// add records a delivery reported by a child process.
func (r *shRecorder) add(c shCall) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
}

func (r *shRecorder) snapshot() []shCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]shCall(nil), r.calls...)
}

// delivered counts the successful deliveries of each record.
func (r *shRecorder) delivered() map[string]int {
	out := map[string]int{}
	for _, c := range r.snapshot() {
		if !c.failed {
			out[c.data]++
		}
	}
	return out
}

func (r *shRecorder) waitDelivered(t testing.TB, want []string, timeout time.Duration) {
	t.Helper()
	var missing []string
	testwait.Eventually(t, func() bool {
		got := r.delivered()
		missing = missing[:0]
		for _, w := range want {
			if got[w] == 0 {
				missing = append(missing, w)
			}
		}
		return len(missing) == 0
	}, timeout, 50*time.Millisecond, "records never delivered: %v", &missing)
}

// shPut is a record put on a known shard.
type shPut struct {
	data, shardID, seq string
}

// shShardKeys maps each open shard to an explicit hash key inside it.
func shShardKeys(t testing.TB, client *kinesis.Client, stream string) map[string]string {
	t.Helper()
	out, err := client.ListShards(t.Context(), &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	require.NoError(t, err)
	keys := map[string]string{}
	for _, s := range out.Shards {
		if s.SequenceNumberRange.EndingSequenceNumber == nil {
			keys[aws.ToString(s.ShardId)] = aws.ToString(s.HashKeyRange.StartingHashKey)
		}
	}
	return keys
}

// shPutOn puts records with the given data on the shard owning hashKey, in order.
func shPutOn(t testing.TB, client *kinesis.Client, stream, hashKey string, data ...string) []shPut {
	t.Helper()
	puts, err := shTryPutOn(t.Context(), client, stream, hashKey, data...)
	require.NoError(t, err)
	return puts
}

// shTryPutOn is shPutOn for goroutines other than the test's.
func shTryPutOn(ctx context.Context, client *kinesis.Client, stream, hashKey string, data ...string) ([]shPut, error) {
	entries := make([]types.PutRecordsRequestEntry, len(data))
	for i, d := range data {
		entries[i] = types.PutRecordsRequestEntry{Data: []byte(d), PartitionKey: aws.String("pk-" + d), ExplicitHashKey: aws.String(hashKey)}
	}
	out, err := client.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
	if err != nil {
		return nil, err
	}
	if n := aws.ToInt32(out.FailedRecordCount); n > 0 {
		return nil, fmt.Errorf("%d records not put", n)
	}
	if len(out.Records) != len(data) {
		return nil, fmt.Errorf("%d results for %d records", len(out.Records), len(data))
	}
	puts := make([]shPut, 0, len(data))
	for i, d := range data {
		r := out.Records[i]
		puts = append(puts, shPut{data: d, shardID: aws.ToString(r.ShardId), seq: aws.ToString(r.SequenceNumber)})
	}
	return puts, nil
}

func shData(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

// shPutLoop puts one record per key every 50 ms until the returned function is called; that
// function stops the loop and returns every record put.
func shPutLoop(t *testing.T, client *kinesis.Client, stream string, keys map[string]string, prefix string) func() []shPut {
	var (
		mu   sync.Mutex
		puts []shPut
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			for id, key := range keys {
				p, err := shTryPutOn(t.Context(), client, stream, key, fmt.Sprintf("%s-%s-%04d", prefix, id, i))
				if err != nil {
					if t.Context().Err() == nil { // else the test is over and has said why
						t.Errorf("put: %v", err)
					}
					return
				}
				mu.Lock()
				puts = append(puts, p...)
				mu.Unlock()
			}
		}
	}()
	var once sync.Once
	halt := func() []shPut {
		once.Do(func() { close(stop) })
		<-done
		mu.Lock()
		defer mu.Unlock()
		return puts
	}
	// A test that fails before calling halt must still end the loop, or its
	// t.Errorf after the test would panic the whole package.
	t.Cleanup(func() { halt() })
	return halt
}

func dataOf(puts []shPut) []string {
	out := make([]string, len(puts))
	for i, p := range puts {
		out[i] = p.data
	}
	return out
}

// shLeases returns each shard's lease owner and checkpoint from the lease table.
func shLeases(t testing.TB, table string) (owners, checkpoints map[string]string) {
	t.Helper()
	owners, checkpoints = map[string]string{}, map[string]string{}
	items, err := scanLeases(t.Context(), localaws.Get(t).DynamoDBClient(), table)
	var notYet *dtypes.ResourceNotFoundException
	if errors.As(err, &notYet) {
		return owners, checkpoints
	}
	require.NoError(t, err)
	for _, item := range items {
		id, _ := attrString(item, leases.AttrShardID)
		if o, ok := attrString(item, leases.AttrOwner); ok {
			owners[id] = o
		}
		if cp, ok := attrString(item, leases.AttrCheckpoint); ok {
			checkpoints[id] = cp
		}
	}
	return owners, checkpoints
}

// shClaims counts the leases with a pending steal claim.
func shClaims(t testing.TB, table string) int {
	t.Helper()
	items, err := scanLeases(t.Context(), localaws.Get(t).DynamoDBClient(), table)
	require.NoError(t, err)
	n := 0
	for _, item := range items {
		if _, ok := attrString(item, leases.AttrClaim); ok {
			n++
		}
	}
	return n
}

func shOwners(t testing.TB, table string) map[string]string {
	owners, _ := shLeases(t, table)
	return owners
}

// ownedBy counts the shards each worker holds.
func ownedBy(owners map[string]string) map[string]int {
	out := map[string]int{}
	for _, o := range owners {
		out[o]++
	}
	return out
}

func TestSharedDeliversEveryRecordInShardOrderDespiteHandlerFailures(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 4)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("failures")
	// Every 7th handler call fails, whatever the record, retries included.
	rec := &shRecorder{fail: func(n int, _ string) error {
		if n%7 == 0 {
			return errors.New("app unavailable")
		}
		return nil
	}}
	shStart(t, shProps(t, stream, consumer), rec.handler("w"))

	keys := shShardKeys(t, client, stream)
	puts := make([]shPut, 0, 40*len(keys))
	i := 0
	for _, key := range keys {
		puts = append(puts, shPutOn(t, client, stream, key, shData(fmt.Sprintf("s%d", i), 40)...)...)
		i++
	}
	rec.waitDelivered(t, dataOf(puts), 60*time.Second)

	calls := rec.snapshot()
	assert.Greater(t, len(calls)-len(puts), len(puts)/10, "failures happened")
	byData := map[string]shPut{}
	for _, p := range puts {
		byData[p.data] = p
	}
	// Per shard: calls in sequence order; a failed record is retried before the next is tried;
	// each record succeeds once.
	perShard := map[string][]shCall{}
	for _, c := range calls {
		perShard[c.md["shardId"]] = append(perShard[c.md["shardId"]], c)
	}
	require.Len(t, perShard, 4)
	for shard, cs := range perShard {
		for j := 1; j < len(cs); j++ {
			prev, cur := cs[j-1].md["sequenceNumber"], cs[j].md["sequenceNumber"]
			if cs[j-1].failed {
				assert.Equal(t, prev, cur, "shard %s: the record after a failure is the failed one", shard)
			} else {
				assert.True(t, position.SeqLess(prev, cur), "shard %s: %s then %s", shard, prev, cur)
			}
		}
	}
	for data, n := range rec.delivered() {
		assert.Equal(t, 1, n, "%s delivered once", data)
	}

	// Metadata names the record as the put did.
	timestamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
	for _, c := range calls {
		p := byData[c.data]
		assert.Equal(t, p.shardID, c.md["shardId"])
		assert.Equal(t, p.seq, c.md["sequenceNumber"])
		assert.Equal(t, "pk-"+c.data, c.md["partitionKey"])
		assert.Equal(t, stream, c.md["streamName"])
		assert.Regexp(t, timestamp, c.md["approximateArrivalTimestamp"])
		assert.NotContains(t, c.md, "subSequenceNumber")
	}

	// Each shard is checkpointed at its last record.
	last := map[string]string{}
	for _, p := range puts {
		last[p.shardID] = p.seq
	}
	testwait.Eventually(t, func() bool {
		_, cps := shLeases(t, consumer)
		for shard, seq := range last {
			if cps[shard] != seq {
				return false
			}
		}
		return true
	}, 10*time.Second, 100*time.Millisecond)
}

func TestSharedRestartResumesAfterTheCheckpoint(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 2)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("restart")
	keys := shShardKeys(t, client, stream)

	first := make([]shPut, 0, 15*len(keys))
	for id, key := range keys {
		first = append(first, shPutOn(t, client, stream, key, shData("first-"+id, 15)...)...)
	}
	rec := &shRecorder{}
	b1 := shStart(t, shProps(t, stream, consumer), rec.handler("b1"))
	rec.waitDelivered(t, dataOf(first), 30*time.Second)
	require.NoError(t, b1.Close())

	second := make([]shPut, 0, 15*len(keys))
	for id, key := range keys {
		second = append(second, shPutOn(t, client, stream, key, shData("second-"+id, 15)...)...)
	}
	shStart(t, shProps(t, stream, consumer), rec.handler("b2"))
	rec.waitDelivered(t, dataOf(second), 30*time.Second)
	time.Sleep(time.Second) // a redelivery of the first records would have come before the second ones

	got := rec.delivered()
	for _, p := range first {
		assert.Equal(t, 1, got[p.data], "%s is not delivered again after the restart", p.data)
	}
	for _, p := range second {
		assert.Equal(t, 1, got[p.data])
	}

	// The lease table was created with on-demand billing, named after consumerName.
	out, err := localaws.Get(t).DynamoDBClient().DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String(consumer)})
	require.NoError(t, err)
	require.NotNil(t, out.Table.BillingModeSummary)
	assert.Equal(t, dtypes.BillingModePayPerRequest, out.Table.BillingModeSummary.BillingMode)
}

func TestSharedStartsWithinSecondsAndDeliversLatest(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 4)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("latest")
	keys := shShardKeys(t, client, stream)
	old := make([]shPut, 0, len(keys))
	for _, key := range keys {
		old = append(old, shPutOn(t, client, stream, key, "old-"+key)...)
	}
	time.Sleep(2500 * time.Millisecond) // LATEST: records put this long before Read are not delivered

	// Defaults for what this test is about: initialPosition, shardSyncInterval, workerID.
	props := shProps(t, stream, consumer, "initialPosition", "", "shardSyncInterval", "", "leaseDuration", "")
	rec := &shRecorder{}
	readCalled := time.Now()
	shStart(t, props, rec.handler("b"))
	readReturned := time.Now()
	// One second after Read returns, while leases are still being taken, a record on each shard.
	freshPut := make(chan []shPut, 1)
	go func() {
		defer close(freshPut)
		time.Sleep(time.Until(readReturned.Add(time.Second)))
		var fresh []shPut
		for _, key := range keys {
			p, err := shTryPutOn(t.Context(), client, stream, key, "new-"+key)
			if err != nil {
				t.Errorf("put: %v", err)
				return
			}
			fresh = append(fresh, p...)
		}
		freshPut <- fresh
	}()
	t.Cleanup(func() {
		for range freshPut { // the put must not outlive the test (see shPutLoop)
		}
	})

	var owned time.Duration
	testwait.Eventually(t, func() bool {
		owners, _ := shLeases(t, consumer)
		if len(owners) == 4 && len(ownedBy(owners)) == 1 {
			owned = time.Since(readCalled)
			return true
		}
		return false
	}, 5*time.Second, 50*time.Millisecond, "one binding owns the 4 shards within 5 s of Read")
	t.Logf("Read returned after %v; 4 shards owned after %v", readReturned.Sub(readCalled), owned)

	owners, _ := shLeases(t, consumer)
	host, err := os.Hostname()
	require.NoError(t, err)
	for _, w := range owners {
		assert.True(t, strings.HasPrefix(w, host+"-"), "default worker ID %q is the host name and a suffix", w)
	}

	fresh, ok := <-freshPut
	require.True(t, ok)
	rec.waitDelivered(t, dataOf(fresh), 15*time.Second)
	got := rec.delivered()
	for _, p := range old {
		// On each shard the old record precedes the new one, so it would have come first.
		assert.Zero(t, got[p.data], "%s was put before Read with initialPosition LATEST", p.data)
	}
}

func TestSharedReplicasShareShardsAndTakeOverAtOnceFromOneClosed(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 4)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("replicas")
	keys := shShardKeys(t, client, stream)
	// A long lease: a takeover within it proves that the closed replica released its leases.
	props := func(worker string) map[string]string {
		return shProps(t, stream, consumer, "workerID", worker, "leaseDuration", "10s")
	}

	rec := &shRecorder{}
	stopPuts := shPutLoop(t, client, stream, keys, "r")

	shStart(t, props("r1"), rec.handler("r1"))
	time.Sleep(2 * time.Second)
	r2 := shStart(t, props("r2"), rec.handler("r2"))
	shStart(t, props("r3"), rec.handler("r3"))
	lastJoined := time.Now()

	fair := func(owners map[string]string, workers ...string) bool {
		counts := ownedBy(owners)
		lo, hi := len(owners), 0
		for _, w := range workers {
			lo, hi = min(lo, counts[w]), max(hi, counts[w])
		}
		return len(owners) == 4 && lo >= 1 && hi-lo <= 1
	}
	var settled map[string]string
	testwait.Eventually(t, func() bool {
		settled = shOwners(t, consumer)
		return fair(settled, "r1", "r2", "r3") && shClaims(t, consumer) == 0
	}, 15*time.Second, 100*time.Millisecond, "three replicas split four shards 2/1/1, with no handover pending, within 15 s of the last joining")
	t.Logf("fair split after %v", time.Since(lastJoined))
	testwait.Never(t, func() bool {
		return !maps.Equal(shOwners(t, consumer), settled)
	}, 3*time.Second, 100*time.Millisecond, "the split holds: no lease moves once the shares are fair")

	closing := time.Now()
	require.NoError(t, r2.Close())
	assert.Less(t, time.Since(closing), 5*time.Second)
	testwait.Eventually(t, func() bool {
		owners, _ := shLeases(t, consumer)
		counts := ownedBy(owners)
		return counts["r2"] == 0 && counts["r1"]+counts["r3"] == 4
	}, 4*time.Second, 50*time.Millisecond, "the closed replica's shards are taken over well within the 10 s lease")
	t.Logf("takeover %v after Close began", time.Since(closing))

	time.Sleep(time.Second)
	all := dataOf(stopPuts())
	rec.waitDelivered(t, all, 30*time.Second)
}

func TestSharedSplitAndMergeDeliverParentsBeforeChildren(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("reshard")
	parentKeys := shShardKeys(t, client, stream)
	require.Len(t, parentKeys, 1)
	var parent string
	for id := range parentKeys {
		parent = id
	}

	// Slow records make a parent still busy when its children have records.
	var order atomic.Int64
	type seen struct {
		first, last int64
	}
	var (
		mu      sync.Mutex
		byShard = map[string]*seen{}
	)
	rec := &shRecorder{}
	record := rec.handler("b")
	handler := func(ctx context.Context, r *bindings.ReadResponse) ([]byte, error) {
		if strings.HasPrefix(string(r.Data), "slow-") {
			time.Sleep(60 * time.Millisecond)
		}
		n := order.Add(1)
		mu.Lock()
		s := byShard[r.Metadata["shardId"]]
		if s == nil {
			s = &seen{first: n}
			byShard[r.Metadata["shardId"]] = s
		}
		s.last = n
		mu.Unlock()
		return record(ctx, r)
	}
	shStart(t, shProps(t, stream, consumer), handler)

	all := dataOf(shPutOn(t, client, stream, "0", shData("slow-p", 25)...))
	waitActive := func() {
		testwait.Eventually(t, func() bool {
			out, err := client.DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
			return err == nil && out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive
		}, 10*time.Second, 20*time.Millisecond)
	}
	mid := new(big.Int).Lsh(big.NewInt(1), 127).String()
	_, err := client.SplitShard(t.Context(), &kinesis.SplitShardInput{StreamName: aws.String(stream), ShardToSplit: aws.String(parent), NewStartingHashKey: aws.String(mid)})
	require.NoError(t, err)
	waitActive()
	childKeys := shShardKeys(t, client, stream)
	require.Len(t, childKeys, 2)
	// The children by hash range. The merge makes low the merged shard's parent and high its
	// adjacent parent: high is made much slower than low, so a child that waited for one parent only
	// would start too early.
	var low, high string
	for id, key := range childKeys {
		if key == "0" {
			low = id
		} else {
			high = id
		}
	}
	all = append(all, dataOf(shPutOn(t, client, stream, childKeys[low], shData("fast-a", 3)...))...)
	all = append(all, dataOf(shPutOn(t, client, stream, childKeys[high], shData("slow-b", 25)...))...)

	_, err = client.MergeShards(t.Context(), &kinesis.MergeShardsInput{StreamName: aws.String(stream), ShardToMerge: aws.String(low), AdjacentShardToMerge: aws.String(high)})
	require.NoError(t, err)
	waitActive()
	mergedKeys := shShardKeys(t, client, stream)
	require.Len(t, mergedKeys, 1)
	var merged string
	for id := range mergedKeys {
		merged = id
	}
	all = append(all, dataOf(shPutOn(t, client, stream, "0", shData("fast-m", 10)...))...)

	rec.waitDelivered(t, all, 60*time.Second)
	mu.Lock()
	defer mu.Unlock()
	require.Contains(t, byShard, merged)
	assert.Greater(t, byShard[low].first, byShard[parent].last, "split: the low child after its parent")
	assert.Greater(t, byShard[high].first, byShard[parent].last, "split: the high child after its parent")
	assert.Greater(t, byShard[merged].first, byShard[low].last, "merge: the child after its parent")
	assert.Greater(t, byShard[merged].first, byShard[high].last, "merge: the child after its adjacent parent")
	for data, n := range rec.delivered() {
		assert.Equal(t, 1, n, "%s delivered once", data)
	}
}

func TestSharedCloseReturnsInTimeWithAHandlerThatIgnoresItsContext(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 2)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("stuck")
	keys := shShardKeys(t, client, stream)
	var stuckKey, otherKey string
	for _, k := range keys {
		if stuckKey == "" {
			stuckKey = k
		} else {
			otherKey = k
		}
	}

	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	rec := &shRecorder{}
	record := rec.handler("b1")
	b1 := shStart(t, shProps(t, stream, consumer, "workerID", "b1", "leaseDuration", "10s"), func(ctx context.Context, r *bindings.ReadResponse) ([]byte, error) {
		if string(r.Data) == "stuck" {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release // ignores ctx
		}
		return record(ctx, r)
	})
	stuck := shPutOn(t, client, stream, stuckKey, "stuck", "after-stuck")
	shPutOn(t, client, stream, otherKey, "other")
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the stuck record was never delivered")
	}
	rec.waitDelivered(t, []string{"other"}, 20*time.Second)

	closing := time.Now()
	err := b1.Close()
	took := time.Since(closing)
	assert.Less(t, took, 5*time.Second, "Close returns within 5 s")
	require.Error(t, err, "Close reports the handler call that did not return")
	t.Logf("Close took %v: %v", took, err)
	owners, _ := shLeases(t, consumer)
	assert.Zero(t, ownedBy(owners)["b1"], "the closed binding's leases are released, the stuck shard's too")

	// Another replica takes both shards at once and delivers the stuck record again.
	shStart(t, shProps(t, stream, consumer, "workerID", "b2", "leaseDuration", "10s"), rec.handler("b2"))
	testwait.Eventually(t, func() bool {
		owners, _ := shLeases(t, consumer)
		return ownedBy(owners)["b2"] == 2
	}, 5*time.Second, 50*time.Millisecond)
	rec.waitDelivered(t, []string{"stuck", "after-stuck"}, 20*time.Second)
	testwait.Eventually(t, func() bool {
		_, cps := shLeases(t, consumer)
		return cps[stuck[1].shardID] == stuck[1].seq
	}, 10*time.Second, 50*time.Millisecond)

	// The stuck call of the closed binding returns: it must not move the checkpoint back.
	releaseOnce.Do(func() { close(release) })
	time.Sleep(500 * time.Millisecond)
	_, cps := shLeases(t, consumer)
	assert.Equal(t, stuck[1].seq, cps[stuck[1].shardID])
}

func TestSharedCloseLetsTheHandlerInFlightFinishAndCheckpointsIt(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("inflight")
	entered := make(chan struct{}, 1)
	var slowErr atomic.Value
	rec := &shRecorder{}
	record := rec.handler("b1")
	b1 := shStart(t, shProps(t, stream, consumer), func(ctx context.Context, r *bindings.ReadResponse) ([]byte, error) {
		if string(r.Data) == "slow" {
			entered <- struct{}{}
			select {
			case <-time.After(1500 * time.Millisecond):
				slowErr.Store("finished")
			case <-ctx.Done():
				slowErr.Store("cancelled")
				return nil, ctx.Err()
			}
		}
		return record(ctx, r)
	})
	puts := shPutOn(t, client, stream, "0", "first", "slow", "next")
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the slow record was never delivered")
	}

	closing := time.Now()
	require.NoError(t, b1.Close())
	took := time.Since(closing)
	assert.Less(t, took, 5*time.Second)
	assert.Equal(t, "finished", slowErr.Load(), "the call in flight ran to its end")
	_, cps := shLeases(t, consumer)
	assert.Equal(t, puts[1].seq, cps[puts[1].shardID], "the finished call is checkpointed, nothing after it")
	assert.Zero(t, rec.delivered()["next"], "nothing is delivered once Close began")

	shStart(t, shProps(t, stream, consumer), rec.handler("b2"))
	rec.waitDelivered(t, []string{"next"}, 20*time.Second)
	got := rec.delivered()
	assert.Equal(t, 1, got["slow"])
	assert.Equal(t, 1, got["first"])
}

// Not parallel: it checks that no goroutine outlives Close, so nothing else may run.
func TestSharedCloseWhileAParentBlocksItsChildrenLeavesNoGoroutine(t *testing.T) {
	srv := localaws.Get(t)
	stream := localaws.NewStream(t, 1)
	client := srv.KinesisClient()
	consumer := localaws.UniqueName("parentwait")
	ignore := goleak.IgnoreCurrent()

	rec := &shRecorder{fail: func(_ int, data string) error {
		if data == "poison" {
			return errors.New("app rejects it")
		}
		return nil
	}}
	b := shStart(t, shProps(t, stream, consumer, "workerID", "w"), rec.handler("w"))
	shards := shShardKeys(t, client, stream)
	var parent string
	for id := range shards {
		parent = id
	}
	shPutOn(t, client, stream, "0", "ok", "poison")
	testwait.Eventually(t, func() bool {
		n := 0
		for _, c := range rec.snapshot() {
			if c.data == "poison" {
				n++
			}
		}
		return n >= 2
	}, 20*time.Second, 20*time.Millisecond)

	// The parent cannot finish, so its children are not leased: the worker holds only the parent,
	// retrying the poison record.
	mid := new(big.Int).Lsh(big.NewInt(1), 127).String()
	_, err := client.SplitShard(t.Context(), &kinesis.SplitShardInput{StreamName: aws.String(stream), ShardToSplit: aws.String(parent), NewStartingHashKey: aws.String(mid)})
	require.NoError(t, err)
	testwait.Eventually(t, func() bool { return len(shShardKeys(t, client, stream)) == 2 }, 20*time.Second, 20*time.Millisecond)
	testwait.Never(t, func() bool {
		owners, _ := shLeases(t, consumer)
		return len(owners) != 1 || owners[parent] != "w"
	}, time.Second, 50*time.Millisecond, "the children wait for their unfinished parent")
	time.Sleep(300 * time.Millisecond)

	closing := time.Now()
	require.NoError(t, b.Close())
	assert.Less(t, time.Since(closing), 5*time.Second)
	owners, _ := shLeases(t, consumer)
	assert.Empty(t, owners, "every lease is released")

	closeIdleTestConnections(srv)
	goleak.VerifyNone(t, ignore)
}

// closeIdleTestConnections closes the idle connections of the tests' own SDK clients on srv, whose
// goroutines a leak check would otherwise report.
func closeIdleTestConnections(srv *localaws.Servers) {
	if c, ok := srv.AWSConfig().HTTPClient.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func TestSharedDefaultWorkerIDIsUniquePerInstance(t *testing.T) {
	t.Parallel()
	host, err := os.Hostname()
	require.NoError(t, err)
	a, b := defaultWorkerID(), defaultWorkerID()
	assert.NotEqual(t, a, b)
	assert.Regexp(t, "^"+regexp.QuoteMeta(host)+"-[0-9a-f]{8}$", a)
}

// kplAggregate encodes user records as the KPL does: magic, protobuf AggregatedRecord, MD5 of it.
func kplAggregate(t testing.TB, data ...string) []byte {
	t.Helper()
	agg := &kplrecords.AggregatedRecord{}
	for i, d := range data {
		idx := uint64(i)
		agg.PartitionKeyTable = append(agg.PartitionKeyTable, fmt.Sprintf("agg-pk-%d", i))
		agg.Records = append(agg.Records, &kplrecords.Record{PartitionKeyIndex: &idx, Data: []byte(d)})
	}
	body, err := proto.Marshal(agg)
	require.NoError(t, err)
	sum := md5.Sum(body)
	return append(append([]byte("\xf3\x89\x9a\xc2"), body...), sum[:]...)
}

func TestSharedDeliversKPLAggregatedRecordsOneByOneAndResumesInsideTheAggregate(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("kpl")
	out, err := client.PutRecord(t.Context(), &kinesis.PutRecordInput{
		StreamName: aws.String(stream), PartitionKey: aws.String("agg"),
		Data: kplAggregate(t, "agg-0", "agg-1", "agg-2", "agg-3", "agg-4"),
	})
	require.NoError(t, err)
	aggSeq, shard := aws.ToString(out.SequenceNumber), aws.ToString(out.ShardId)
	plain := shPutOn(t, client, stream, "0", "plain")

	// The first consumer fails on the fourth user record until it stops.
	rec1 := &shRecorder{fail: func(_ int, data string) error {
		if data == "agg-3" {
			return errors.New("app unavailable")
		}
		return nil
	}}
	b1 := shStart(t, shProps(t, stream, consumer), rec1.handler("b1"))
	testwait.Eventually(t, func() bool {
		n := 0
		for _, c := range rec1.snapshot() {
			if c.data == "agg-3" {
				n++
			}
		}
		return n >= 2
	}, 20*time.Second, 20*time.Millisecond)
	require.NoError(t, b1.Close())
	_, cps := shLeases(t, consumer)
	assert.Equal(t, aggSeq+":2", cps[shard], "checkpointed after the third user record of the aggregate")
	calls := rec1.snapshot()
	require.GreaterOrEqual(t, len(calls), 4)
	for i, c := range calls[:3] {
		assert.Equal(t, fmt.Sprintf("agg-%d", i), c.data)
		assert.Equal(t, aggSeq, c.md["sequenceNumber"])
		assert.Equal(t, strconv.Itoa(i), c.md["subSequenceNumber"])
		assert.Equal(t, fmt.Sprintf("agg-pk-%d", i), c.md["partitionKey"])
	}

	// The next consumer resumes inside the aggregate: nothing of it is delivered twice or skipped.
	rec2 := &shRecorder{}
	shStart(t, shProps(t, stream, consumer), rec2.handler("b2"))
	rec2.waitDelivered(t, []string{"agg-3", "agg-4", "plain"}, 20*time.Second)
	got := rec2.snapshot()
	require.Len(t, got, 3, "agg-0..2 are not delivered again")
	assert.Equal(t, "3", got[0].md["subSequenceNumber"])
	assert.NotContains(t, got[2].md, "subSequenceNumber")
	testwait.Eventually(t, func() bool {
		_, cps := shLeases(t, consumer)
		return cps[shard] == plain[0].seq
	}, 10*time.Second, 50*time.Millisecond)
}

func TestSharedChildrenOfAShardReadBeforeStartFromTheirFirstRecord(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("downsplit")
	props := shProps(t, stream, consumer, "initialPosition", "") // LATEST
	rec := &shRecorder{}
	b1 := shStart(t, props, rec.handler("b1"))
	var parent string
	for id := range shShardKeys(t, client, stream) {
		parent = id
	}
	testwait.Eventually(t, func() bool { return len(shOwners(t, consumer)) == 1 }, 10*time.Second, 50*time.Millisecond)
	shPutOn(t, client, stream, "0", "before")
	rec.waitDelivered(t, []string{"before"}, 20*time.Second)
	require.NoError(t, b1.Close())

	// While no replica runs the shard is split and its children receive records.
	mid := new(big.Int).Lsh(big.NewInt(1), 127).String()
	_, err := client.SplitShard(t.Context(), &kinesis.SplitShardInput{StreamName: aws.String(stream), ShardToSplit: aws.String(parent), NewStartingHashKey: aws.String(mid)})
	require.NoError(t, err)
	testwait.Eventually(t, func() bool { return len(shShardKeys(t, client, stream)) == 2 }, 10*time.Second, 20*time.Millisecond)
	keys := shShardKeys(t, client, stream)
	down := make([]string, 0, len(keys))
	for id, key := range keys {
		down = append(down, dataOf(shPutOn(t, client, stream, key, "while-down-"+id))...)
	}
	time.Sleep(2 * time.Second) // well before the next Read: LATEST alone would skip them

	// The children continue a shard this application read: they are read from their first record.
	shStart(t, props, rec.handler("b2"))
	rec.waitDelivered(t, down, 20*time.Second)
	assert.Equal(t, 1, rec.delivered()["before"])
}

func TestSharedUndecodableAggregateIsDeliveredAsStoredAndSaysSo(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	client := localaws.Get(t).KinesisClient()
	consumer := localaws.UniqueName("badagg")
	body := []byte{0xff, 0xff, 0xff} // not a protobuf message
	sum := md5.Sum(body)
	bad := append(append([]byte("\xf3\x89\x9a\xc2"), body...), sum[:]...)
	for _, data := range [][]byte{kplAggregate(t, "a", "b"), bad, []byte("plain")} {
		_, err := client.PutRecord(t.Context(), &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String("k"), Data: data})
		require.NoError(t, err)
	}

	rec := &shRecorder{}
	shStart(t, shProps(t, stream, consumer), rec.handler("b"))
	rec.waitDelivered(t, []string{"a", "b", string(bad), "plain"}, 20*time.Second)
	calls := rec.snapshot()
	require.Len(t, calls, 4, "nothing dropped, nothing delivered twice")
	assert.Equal(t, string(bad), calls[2].data, "the undecodable record comes in its place, as it was stored")
	assert.Contains(t, calls[2].md["kplAggregateError"], "malformed KPL aggregate")
	assert.NotContains(t, calls[2].md, "subSequenceNumber")
	for _, c := range []shCall{calls[0], calls[1], calls[3]} {
		assert.NotContains(t, c.md, "kplAggregateError", c.data)
	}
}
