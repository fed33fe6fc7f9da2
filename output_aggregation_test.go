package kinesis

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	deagg "github.com/awslabs/kinesis-aggregation/go/v2/deaggregator"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/kpl"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/testlog"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
	"github.com/dapr/components-contrib/bindings"
)

// aggTarget is a stream on one emulator, with the props of a kpl binding for it.
type aggTarget struct {
	server string
	stream string
	props  map[string]string
	client *kinesis.Client
}

func newAggTarget(t *testing.T, server string, shards int32, extra ...string) aggTarget {
	t.Helper()
	srv := localaws.Get(t)
	tg := aggTarget{server: server}
	if server == "kinesalite" {
		tg.stream = kinesaliteStream(t, shards)
		tg.props = kinesaliteProps(t, tg.stream)
		tg.client = srv.KinesaliteClient()
	} else {
		tg.stream = localaws.NewStream(t, shards)
		tg.props = localProps(t, tg.stream)
		tg.client = srv.KinesisClient()
	}
	tg.props["aggregation"] = "kpl"
	for i := 0; i+1 < len(extra); i += 2 {
		tg.props[extra[i]] = extra[i+1]
	}
	return tg
}

// writtenRecord is one user record as read back from the stream: from GetRecords, de-aggregated
// with awslabs' de-aggregator.
type writtenRecord struct {
	shard, seq string
	sub        int // index in its aggregate; -1 for a plain record
	key, data  string
}

func (w writtenRecord) pos() string { return w.shard + "/" + w.seq + "/" + strconv.Itoa(w.sub) }

// readUserRecords reads every shard of the stream from its start and de-aggregates what it finds.
// Each aggregate must carry a valid MD5 trailer and hold more than one record (a group of one goes
// out plain).
func readUserRecords(t *testing.T, client *kinesis.Client, stream string) (out []writtenRecord, kinesisRecords int) {
	t.Helper()
	shards := streamRecords(t, client, stream)
	for _, shard := range slices.Sorted(maps.Keys(shards)) {
		for _, rec := range shards[shard] {
			kinesisRecords++
			if !bytes.HasPrefix(rec.Data, kpl.Magic[:]) {
				out = append(out, writtenRecord{shard: shard, seq: aws.ToString(rec.SequenceNumber), sub: -1,
					key: aws.ToString(rec.PartitionKey), data: string(rec.Data)})
				continue
			}
			body := rec.Data[len(kpl.Magic) : len(rec.Data)-md5.Size]
			sum := md5.Sum(body)
			require.Equal(t, sum[:], rec.Data[len(rec.Data)-md5.Size:], "MD5 trailer of %s", aws.ToString(rec.SequenceNumber))
			users, err := deagg.DeaggregateRecords([]types.Record{rec})
			require.NoError(t, err)
			require.Greater(t, len(users), 1, "an aggregate holds several records")
			for i, u := range users {
				out = append(out, writtenRecord{shard: shard, seq: aws.ToString(u.SequenceNumber), sub: i,
					key: aws.ToString(u.PartitionKey), data: string(u.Data)})
			}
		}
	}
	return out, kinesisRecords
}

// laneOutcome is one create of a lane, with its answer.
type laneOutcome struct {
	key, data string
	md        map[string]string
	err       error
}

// produceLanes runs lanes concurrently; each puts n records under its own key, one after another
// (each create waits for its answer), so each key's order is the order of its records.
func produceLanes(ctx context.Context, b *AWSKinesis, prefix string, lanes, n int) []laneOutcome {
	out := make([][]laneOutcome, lanes)
	var wg sync.WaitGroup
	for lane := range lanes {
		wg.Go(func() {
			for i := range n {
				o := laneOutcome{key: laneKey(lane), data: laneRecord(prefix, lane, i)}
				resp, err := create(ctx, b, []byte(o.data), map[string]string{reqPartitionKey: o.key})
				o.err = err
				if resp != nil {
					o.md = resp.Metadata
				}
				out[lane] = append(out[lane], o)
			}
		})
	}
	wg.Wait()
	return slices.Concat(out...)
}

// answerPos is the position a create's answer names, as writtenRecord.pos spells it.
func answerPos(md map[string]string) string {
	sub := "-1"
	if s, ok := md[respSubSequenceNumber]; ok {
		sub = s
	}
	return md[respShardID] + "/" + md[respSequenceNumber] + "/" + sub
}

// requireWrittenOnceInOrder checks the stream against the creates: every record once, under its
// key, at the position its answer named, and each key's records in the order they were sent.
func requireWrittenOnceInOrder(t *testing.T, written []writtenRecord, outcomes []laneOutcome) {
	t.Helper()
	requireWrittenOnce(t, written, outcomes)
	requireKeyOrder(t, written, func(w writtenRecord) string { return w.key })
}

// requireWrittenOnce checks every record was written once, under its key, at the position its
// answer named, and nothing else was.
func requireWrittenOnce(t *testing.T, written []writtenRecord, outcomes []laneOutcome) {
	t.Helper()
	byData := map[string]writtenRecord{}
	for _, w := range written {
		_, dup := byData[w.data]
		require.False(t, dup, "written twice: %s", w.data)
		byData[w.data] = w
	}
	require.Len(t, written, len(outcomes), "each record written once, nothing else")
	for _, o := range outcomes {
		require.NoError(t, o.err, o.data)
		w, ok := byData[o.data]
		require.True(t, ok, "not written: %s", o.data)
		assert.Equal(t, o.key, w.key, o.data)
		assert.Equal(t, answerPos(o.md), w.pos(), "the answer of %s names its record", o.data)
	}
}

// requireKeyOrder checks that, within each group (of records read in stream order: shards from
// their start, in shard ID order), each lane's records come in the order they were sent.
func requireKeyOrder(t *testing.T, written []writtenRecord, group func(writtenRecord) string) {
	t.Helper()
	next := map[string]int{}
	for _, w := range written {
		prefix, lane, i, ok := parseLaneRecord(w.data)
		require.True(t, ok, w.data)
		g := group(w) + "|" + prefix
		assert.GreaterOrEqual(t, i, next[g], "lane %d out of order at %s", lane, w.data)
		next[g] = i + 1
	}
}

// requirePlacedAsUnaggregated puts one plain record per key with the SDK and checks that the key's
// aggregated records are on the same shard.
func requirePlacedAsUnaggregated(t *testing.T, tg aggTarget, written []writtenRecord) {
	t.Helper()
	shardOf := map[string]string{}
	for _, w := range written {
		if s, ok := shardOf[w.key]; ok {
			require.Equal(t, s, w.shard, "key %s on two shards", w.key)
		}
		shardOf[w.key] = w.shard
	}
	for key, shard := range shardOf {
		out, err := tg.client.PutRecord(t.Context(), &kinesis.PutRecordInput{
			StreamName: aws.String(tg.stream), Data: []byte("plain"), PartitionKey: aws.String(key),
		})
		require.NoError(t, err)
		assert.Equal(t, aws.ToString(out.ShardId), shard, "key %s", key)
	}
}

func TestKPLCreatePacksConcurrentCallersOnTheirOwnShardsInOrder(t *testing.T) {
	t.Parallel()
	for _, server := range []string{"kinesis-local", "kinesalite"} {
		t.Run(server, func(t *testing.T) {
			t.Parallel()
			tg := newAggTarget(t, server, 4)
			spy := newPutSpy()
			b := newBinding(t, tg.props, spy.install)

			outcomes := produceLanes(t.Context(), b, "kpl", 48, 12)

			written, kinesisRecords := readUserRecords(t, tg.client, tg.stream)
			requireWrittenOnceInOrder(t, written, outcomes)
			requirePlacedAsUnaggregated(t, tg, written)
			aggregated := 0
			for _, o := range outcomes {
				if _, ok := o.md[respSubSequenceNumber]; ok {
					aggregated++
				}
			}
			t.Logf("%d user records in %d Kinesis records, %d of them aggregated", len(outcomes), kinesisRecords, aggregated)
			assert.Positive(t, aggregated, "concurrent creates share aggregates")
			assert.Less(t, kinesisRecords, len(outcomes))
			assert.Empty(t, spy.sent("PutRecord"), "through the coalescer")
		})
	}
}

func TestKPLRecordsAreReadBackThroughTheInputInBothModes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		server string
		mode   consumerMode
	}{
		{"kinesis-local", modeShared},
		{"kinesalite", modeShared},
		{"kinesis-local", modeExtended},
	}
	for _, tc := range cases {
		t.Run(tc.server+"/"+string(tc.mode), func(t *testing.T) {
			t.Parallel()
			tg := newAggTarget(t, tc.server, 2)
			producer := newBinding(t, tg.props)
			outcomes := produceLanes(t.Context(), producer, "read", 24, 8)
			sent := make([]string, 0, len(outcomes))
			for _, o := range outcomes {
				require.NoError(t, o.err)
				sent = append(sent, o.data)
			}
			_, kinesisRecords := readUserRecords(t, tg.client, tg.stream)
			require.Less(t, kinesisRecords, len(sent), "some records were aggregated")

			props := withConsumer(tg.props, tc.mode)
			props["shardSyncInterval"] = "200ms"
			var consumer *AWSKinesis
			if tc.mode == modeExtended {
				consumer, _ = newExtendedBinding(t, props)
			} else {
				consumer = newBinding(t, props)
			}
			h := newKeyedRecorder()
			require.NoError(t, consumer.Read(t.Context(), h.handle))
			h.waitFor(t, sent, 60*time.Second)

			res := checkAtLeastOnce(t, sent, h.deliveries())
			assert.Zero(t, res.duplicates, "every record once")
			for _, o := range outcomes {
				assert.Equal(t, o.key, h.keyOf(o.data), o.data)
			}
		})
	}
}

// keyedRecorder is a recorder that also keeps the partition key each record was delivered with.
type keyedRecorder struct {
	*recorder
	mu   sync.Mutex
	keys map[string]string
}

func newKeyedRecorder() *keyedRecorder {
	return &keyedRecorder{recorder: newRecorder(), keys: map[string]string{}}
}

func (k *keyedRecorder) handle(ctx context.Context, r *bindings.ReadResponse) ([]byte, error) {
	k.mu.Lock()
	k.keys[string(r.Data)] = r.Metadata["partitionKey"]
	k.mu.Unlock()
	return k.recorder.handle(ctx, r)
}

func (k *keyedRecorder) keyOf(data string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[data]
}

// bulkLanes writes n records with one bulkCreate, entry i being record i/lanes of lane i%lanes, and
// returns each entry's outcome as its result gave it; every entry must succeed.
func bulkLanes(t *testing.T, b *AWSKinesis, prefix string, n, lanes int) []laneOutcome {
	t.Helper()
	payload := make([]map[string]string, n)
	outcomes := make([]laneOutcome, n)
	for i := range payload {
		lane := i % lanes
		outcomes[i] = laneOutcome{key: laneKey(lane), data: laneRecord(prefix, lane, i/lanes)}
		payload[i] = map[string]string{"partitionKey": outcomes[i].key, "data": base64.StdEncoding.EncodeToString([]byte(outcomes[i].data))}
	}
	body, err := json.Marshal(payload)
	require.NoError(t, err)
	results, resp, err := bulkCreate(t.Context(), b, string(body), map[string]string{reqDataEncoding: dataEncodingBase64})
	require.NoError(t, err)
	assert.Equal(t, "0", resp.Metadata[respFailedCount])
	require.Len(t, results, n)
	for i, r := range results {
		require.Empty(t, r.ErrorCode, i)
		outcomes[i].md = map[string]string{respShardID: r.ShardID, respSequenceNumber: r.SequenceNumber}
		if r.SubSequenceNumber != nil {
			outcomes[i].md[respSubSequenceNumber] = strconv.Itoa(*r.SubSequenceNumber)
		}
	}
	return outcomes
}

func TestKPLBulkCreateAnswersEachEntryWithItsPlaceInTheAggregate(t *testing.T) {
	t.Parallel()
	for _, server := range []string{"kinesis-local", "kinesalite"} {
		t.Run(server, func(t *testing.T) {
			t.Parallel()
			tg := newAggTarget(t, server, 4)
			spy := newPutSpy()
			b := newBinding(t, tg.props, spy.install)

			const n = 600 // more than one request of plain records
			outcomes := bulkLanes(t, b, "bulk", n, 30)

			written, kinesisRecords := readUserRecords(t, tg.client, tg.stream)
			requireWrittenOnceInOrder(t, written, outcomes)
			requirePlacedAsUnaggregated(t, tg, written)
			t.Logf("%d entries in %d Kinesis records, %d PutRecords", n, kinesisRecords, len(spy.sent("PutRecords")))
			assert.LessOrEqual(t, kinesisRecords, 4, "one aggregate per shard")
			assert.Len(t, spy.sent("PutRecords"), 1)
		})
	}
}

func TestKPLCloseFlushesOpenAggregates(t *testing.T) {
	t.Parallel()
	tg := newAggTarget(t, "kinesalite", 2, "batchLinger", "1m")
	spy := newPutSpy()
	b := newBinding(t, tg.props, spy.install)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	release := spy.blockWith(t, b) // the batch lingers while the blocker is in flight

	done := make(chan []laneOutcome, 1)
	go func() { done <- produceLanes(ctx, b, "close", 30, 1) }()
	testwait.Eventually(t, func() bool { return b.producer.Waiting() == 31 }, 10*time.Second, time.Millisecond,
		"30 records wait in the open batch")

	spy.drainArrived()
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	spy.waitArrived(t, 1) // Close sent the open batch at once, without its linger
	release()
	require.NoError(t, <-closed)
	outcomes := <-done

	written, _ := readUserRecords(t, tg.client, tg.stream)
	var users []writtenRecord
	for _, w := range written {
		if w.key != "blocker" {
			users = append(users, w)
		}
	}
	requireWrittenOnceInOrder(t, users, outcomes)
	for _, o := range outcomes {
		assert.Contains(t, o.md, respSubSequenceNumber, "%s went out in an aggregate", o.data)
	}
}

// produceUntil is produceLanes until stop is closed.
func produceUntil(ctx context.Context, b *AWSKinesis, prefix string, lanes int, stop <-chan struct{}) []laneOutcome {
	out := make([][]laneOutcome, lanes)
	var wg sync.WaitGroup
	for lane := range lanes {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				o := laneOutcome{key: laneKey(lane), data: laneRecord(prefix, lane, i)}
				resp, err := create(ctx, b, []byte(o.data), map[string]string{reqPartitionKey: o.key})
				o.err = err
				if resp != nil {
					o.md = resp.Metadata
				}
				out[lane] = append(out[lane], o)
				if err != nil && ctx.Err() != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return slices.Concat(out...)
}

func TestKPLReshardWhileProducingLosesNothingAndPlacesOnTheNewShards(t *testing.T) {
	t.Parallel()
	for _, server := range []string{"kinesis-local", "kinesalite"} {
		t.Run(server, func(t *testing.T) {
			t.Parallel()
			tg := newAggTarget(t, server, 2)
			b := newBinding(t, tg.props)
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()

			stop := make(chan struct{})
			produced := make(chan []laneOutcome, 1)
			go func() { produced <- produceUntil(ctx, b, "during", 16, stop) }()
			testwait.Eventually(t, func() bool {
				return b.producer.KnownShards() == 2
			}, 30*time.Second, 5*time.Millisecond, "producing on two shards")

			want := 4
			if server == "kinesis-local" {
				_, err := tg.client.UpdateShardCount(ctx, &kinesis.UpdateShardCountInput{
					StreamName: aws.String(tg.stream), TargetShardCount: aws.Int32(4), ScalingType: types.ScalingTypeUniformScaling,
				})
				require.NoError(t, err)
			} else { // kinesalite has no UpdateShardCount: split the first shard at its middle
				want = 3
				_, err := tg.client.SplitShard(ctx, &kinesis.SplitShardInput{
					StreamName: aws.String(tg.stream), ShardToSplit: aws.String("shardId-000000000000"),
					NewStartingHashKey: aws.String("85070591730234615865843651857942052864"), // 2^126
				})
				require.NoError(t, err)
			}
			waitStreamActive(t, tg.client, tg.stream)
			// Puts that land on the new shards tell the producer that its map is out of date.
			testwait.Eventually(t, func() bool {
				return b.producer.KnownShards() == want
			}, 30*time.Second, 5*time.Millisecond, "the producer reloads its shard map")
			close(stop)
			during := <-produced
			after := produceLanes(ctx, b, "after", 16, 4)

			written, _ := readUserRecords(t, tg.client, tg.stream)
			requireWrittenOnce(t, written, slices.Concat(during, after))
			requireKeyOrder(t, written, func(w writtenRecord) string { return w.shard + "|" + w.key })
			var placed []writtenRecord
			for _, w := range written {
				if prefix, _, _, _ := parseLaneRecord(w.data); prefix == "after" {
					placed = append(placed, w)
				}
			}
			requirePlacedAsUnaggregated(t, tg, placed)
			t.Logf("%d records during the reshard, %d after", len(during), len(after))
		})
	}
}

func TestKPLPutsWhatCannotShareAnAggregateOnItsOwn(t *testing.T) {
	t.Parallel()
	tg := newAggTarget(t, "kinesalite", 1)
	spy := newPutSpy()
	b := newBinding(t, tg.props, spy.install)

	// At the stream's maximum record size with its key, a record leaves no room for the aggregate's
	// framing: it is put as it is.
	big := bytes.Repeat([]byte("b"), defaultMaxRecordSize-len("big"))
	payload, err := json.Marshal([]map[string]string{
		{"partitionKey": "small", "data": base64.StdEncoding.EncodeToString([]byte("s1"))},
		{"partitionKey": "big", "data": base64.StdEncoding.EncodeToString(big)},
		{"partitionKey": "small", "data": base64.StdEncoding.EncodeToString([]byte("s2"))},
		{"partitionKey": "small", "data": base64.StdEncoding.EncodeToString([]byte("s3"))},
	})
	require.NoError(t, err)
	results, _, err := bulkCreate(t.Context(), b, string(payload), map[string]string{reqDataEncoding: dataEncodingBase64})
	require.NoError(t, err)
	require.Len(t, results, 4)
	for i, r := range results {
		require.Empty(t, r.ErrorCode, i)
	}
	assert.Nil(t, results[1].SubSequenceNumber, "the big record is not aggregated")
	assert.NotNil(t, results[3].SubSequenceNumber, "the small ones after it are")

	// sequenceNumberForOrdering needs PutRecord: never aggregated.
	resp, err := create(t.Context(), b, []byte("ordered"), map[string]string{
		reqPartitionKey: "small", reqSequenceNumberForOrdering: results[3].SequenceNumber,
	})
	require.NoError(t, err)
	assert.NotContains(t, resp.Metadata, respSubSequenceNumber)
	assert.Len(t, spy.sent("PutRecord"), 1)

	written, _ := readUserRecords(t, tg.client, tg.stream)
	require.Len(t, written, 5)
	byData := map[string]writtenRecord{}
	for _, w := range written {
		byData[w.data] = w
	}
	assert.Equal(t, -1, byData[string(big)].sub, "plain")
	assert.Equal(t, "big", byData[string(big)].key)
	assert.Equal(t, -1, byData["ordered"].sub, "plain")
}

func TestKPLAnAggregateEntryFailureAnswersEveryRecordInIt(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		fail    func(attempt int) string
		written bool
	}{
		{"throttled once, then retried", func(attempt int) string {
			if attempt == 1 {
				return codeThroughputExceeded
			}
			return ""
		}, true},
		{"rejected", func(int) string { return "InvalidArgumentException" }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tg := newAggTarget(t, "kinesalite", 1, "batchLinger", "1m")
			spy := newPutSpy()
			spy.fail = func(key string, attempt int) string {
				if key == "blocker" {
					return ""
				}
				return tc.fail(attempt)
			}
			b := newBinding(t, tg.props, spy.install)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			release := spy.blockWith(t, b)
			done := make(chan []laneOutcome, 1)
			go func() { done <- produceLanes(ctx, b, "fail", 20, 1) }()
			testwait.Eventually(t, func() bool { return b.producer.Waiting() == 21 }, 10*time.Second, time.Millisecond)
			release() // the 20 go out together, in one aggregate
			outcomes := <-done

			written, _ := readUserRecords(t, tg.client, tg.stream)
			if tc.written {
				requireWrittenOnceInOrder(t, written[1:], outcomes) // after the blocker
				for _, o := range outcomes {
					assert.Contains(t, o.md, respSubSequenceNumber)
				}
				return
			}
			require.Len(t, written, 1, "only the blocker")
			for _, o := range outcomes {
				require.Error(t, o.err)
				assert.Contains(t, o.err.Error(), "InvalidArgumentException", o.data)
				assert.Contains(t, o.err.Error(), "(the record was not written)", o.data)
			}
		})
	}
}

// TestKPLWithoutListShardsGroupsByHashKeyAndSaysSoOnce: when ListShards is denied (an IAM policy
// without kinesis:ListShards), aggregation still places every record exactly, packing only records
// of the same hash key, warns once, and does not ask again.
func TestKPLWithoutListShardsGroupsByHashKeyAndSaysSoOnce(t *testing.T) {
	t.Parallel()
	tg := newAggTarget(t, "kinesis-local", 4)
	denied := newFaultClient(func(op string, _ int, req *http.Request) *http.Response {
		if op == "ListShards" {
			return awsErrorResponse(req, http.StatusBadRequest, "AccessDeniedException", "not allowed to list shards")
		}
		return nil
	})
	log, logs := testlog.New(t)
	b := newBinding(t, tg.props, func(b *AWSKinesis) { b.sdkHTTPClient, b.logger = denied, log })

	const n, lanes = 300, 10
	outcomes := bulkLanes(t, b, "deny", n, lanes)
	// Past the shard map's reload interval, so that it could ask again; then a second round of new
	// records of the same keys.
	time.Sleep(2 * shardMapMinInterval)
	outcomes = append(outcomes, bulkLanes(t, b, "deny2", n, lanes)...)

	written, kinesisRecords := readUserRecords(t, tg.client, tg.stream)
	require.Len(t, written, 2*n)
	requireWrittenOnceInOrder(t, written, outcomes)
	requirePlacedAsUnaggregated(t, tg, written)
	assert.LessOrEqual(t, kinesisRecords, 2*lanes, "one aggregate per key and round")
	assert.Equal(t, 1, denied.count("ListShards"), "a denied ListShards is not asked again")
	assert.Equal(t, 1, logs.Count("cannot list the shards"), logs.String())
}
