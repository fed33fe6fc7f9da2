package kinesis

import (
	"bytes"
	"context"
	"encoding/json"
	"hash/fnv"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

// The output side under faults. What makes these tests fail: a create that returned success
// whose record is not in the stream exactly as sent, a record in the stream nobody sent, a failed
// create claiming "not written" whose record is there after all, a call that outlives its
// deadline, and a binding that does not recover by itself once the fault ends.

// createOutcome is one create call and what it returned.
type createOutcome struct {
	data, key  string
	shard, seq string
	err        error
	took       time.Duration
}

const createTimeout = 20 * time.Second

// outputPaths are the two ways create writes: one PutRecord per call, or coalesced PutRecords.
var outputPaths = map[string]map[string]string{
	"PutRecord": {"batchLinger": "0"},
	"coalesced": {},
}

// createLanes runs one caller per lane, each creating records from..to-1 of its lane in order,
// every call with its own deadline.
func createLanes(ctx context.Context, b *AWSKinesis, prefix string, lanes, from, to int) []createOutcome {
	return eachLane(lanes, func(lane int, add func(createOutcome)) {
		for i := from; i < to; i++ {
			add(createOne(ctx, b, laneRecord(prefix, lane, i), laneKey(lane)))
		}
	})
}

func createOne(ctx context.Context, b *AWSKinesis, data, key string) createOutcome {
	ctx, cancel := context.WithTimeout(ctx, createTimeout)
	defer cancel()
	began := time.Now()
	resp, err := create(ctx, b, []byte(data), map[string]string{reqPartitionKey: key})
	o := createOutcome{data: data, key: key, err: err, took: time.Since(began)}
	if err == nil {
		o.shard, o.seq = resp.Metadata[respShardID], resp.Metadata[respSequenceNumber]
	}
	return o
}

// createsUntil keeps creating, one caller per lane, until stop is closed.
func createsUntil(ctx context.Context, b *AWSKinesis, prefix string, lanes int, stop <-chan struct{}) []createOutcome {
	return eachLane(lanes, func(lane int, add func(createOutcome)) {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			add(createOne(ctx, b, laneRecord(prefix, lane, i), laneKey(lane)))
		}
	})
}

// eachLane runs caller once per lane, concurrently, and gathers every outcome the callers add.
func eachLane(lanes int, caller func(lane int, add func(createOutcome))) []createOutcome {
	var mu sync.Mutex
	var out []createOutcome
	add := func(o createOutcome) {
		mu.Lock()
		out = append(out, o)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for lane := range lanes {
		wg.Go(func() { caller(lane, add) })
	}
	wg.Wait()
	return out
}

// outputResult summarises a run for the log.
type outputResult struct {
	ok, failed, failedNotWritten, inStream, duplicates, unconfirmedWritten int
}

// checkCreates reads the whole stream and holds it against what the calls returned.
func checkCreates(t *testing.T, srv *localaws.Servers, stream string, outcomes []createOutcome) outputResult {
	t.Helper()
	type stored struct{ data, key string }
	bySeq := map[string]stored{} // shard/sequence -> record
	copies := map[string]int{}   // data -> times in the stream
	for shard, recs := range streamRecords(t, srv.KinesisClient(), stream) {
		for _, r := range recs {
			bySeq[shard+"/"+aws.ToString(r.SequenceNumber)] = stored{string(r.Data), aws.ToString(r.PartitionKey)}
			copies[string(r.Data)]++
		}
	}

	var res outputResult
	attempted := map[string]bool{}
	for _, o := range outcomes {
		attempted[o.data] = true
		assert.Less(t, o.took, createTimeout+10*time.Second, "create of %s outlived its deadline", o.data)
		if o.err == nil {
			res.ok++
			got, ok := bySeq[o.shard+"/"+o.seq]
			if assert.True(t, ok, "create of %s returned success (%s %s) but the record is not in the stream", o.data, o.shard, o.seq) {
				assert.Equal(t, stored{o.data, o.key}, got, "the record at %s %s", o.shard, o.seq)
			}
			continue
		}
		res.failed++
		if copies[o.data] > 0 {
			res.unconfirmedWritten++
		}
		// The binding tells the caller whether a failed record may have been written; "not
		// written" must be true, or a caller that does not retry loses nothing it knows of.
		if strings.Contains(o.err.Error(), "the record was not written") {
			res.failedNotWritten++
			assert.Zero(t, copies[o.data], "create of %s failed with %q, yet the record is in the stream", o.data, o.err)
		}
	}
	for data, n := range copies {
		assert.True(t, attempted[data], "the stream holds %q, which nobody sent", data)
		res.inStream++
		res.duplicates += n - 1
	}
	t.Logf("creates: %d ok, %d failed (%d said not written; %d written anyway), stream holds %d distinct records, %d duplicates",
		res.ok, res.failed, res.failedNotWritten, res.unconfirmedWritten, res.inStream, res.duplicates)
	logErrorKinds(t, outcomes)
	return res
}

// logErrorKinds shows how the failed creates failed, most frequent first, stripped of the
// addresses and names that differ between calls.
func logErrorKinds(t *testing.T, outcomes []createOutcome) {
	t.Helper()
	strip := regexp.MustCompile(`127\.0\.0\.1:\d+|"[^"]*"|\d+`)
	kinds := map[string]int{}
	for _, o := range outcomes {
		if o.err != nil {
			kinds[strip.ReplaceAllString(o.err.Error(), "_")]++
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(kinds), func(a, b string) int { return kinds[b] - kinds[a] }) {
		t.Logf("  %4d x %.260s", kinds[k], k)
	}
}

// requireAllOK fails the test unless every create succeeded: after a fault has healed the binding
// must work again by itself.
func requireAllOK(t *testing.T, outcomes []createOutcome, what string) {
	t.Helper()
	for _, o := range outcomes {
		require.NoError(t, o.err, "%s: create of %s", what, o.data)
	}
}

func TestCreateUnderNetworkFaults(t *testing.T) {
	t.Parallel()
	srv := localaws.Get(t)
	for path, extra := range outputPaths {
		t.Run(path, func(t *testing.T) {
			t.Parallel()

			t.Run("latency", func(t *testing.T) {
				t.Parallel()
				stream := localaws.NewStreamOn(t, srv, 2)
				proxy := newFaultProxy(t, srv.KinesisEndpoint)
				proxy.SetLatency(60 * time.Millisecond)
				b := newBinding(t, withProps(serverProps(srv, stream, proxy.URL(), srv.DynamoDBEndpoint), extra))

				outcomes := createLanes(t.Context(), b, "lat", 8, 0, 15)
				requireAllOK(t, outcomes, "under latency")
				res := checkCreates(t, srv, stream, outcomes)
				assert.Zero(t, res.duplicates, "nothing failed, so nothing may be written twice")
			})

			t.Run("connections cut", func(t *testing.T) {
				t.Parallel()
				stream := localaws.NewStreamOn(t, srv, 2)
				proxy := newFaultProxy(t, srv.KinesisEndpoint)
				proxy.SetLatency(20 * time.Millisecond) // so that cuts find requests in flight
				b := newBinding(t, withProps(serverProps(srv, stream, proxy.URL(), srv.DynamoDBEndpoint), extra))

				stop := cutEvery(t, 200*time.Millisecond, proxy)
				outcomes := createLanes(t.Context(), b, "cut", 8, 0, 15)
				cuts := stop()
				require.Positive(t, cuts, "the fault must have happened")

				after := createLanes(t.Context(), b, "cut", 8, 15, 18)
				requireAllOK(t, after, "after the cuts")
				res := checkCreates(t, srv, stream, append(outcomes, after...))
				t.Logf("%d rounds of cuts hit open connections", cuts)
				assert.Positive(t, res.ok)
			})

			t.Run("kinesis restarted", func(t *testing.T) {
				t.Parallel()
				srv := privateServers(t)
				stream := localaws.NewStreamOn(t, srv, 2)
				b := newBinding(t, withProps(serverProps(srv, stream, srv.KinesisEndpoint, srv.DynamoDBEndpoint), extra))

				stop := make(chan struct{})
				during := make(chan []createOutcome, 1)
				go func() { during <- createsUntil(t.Context(), b, "rst", 8, stop) }()
				time.Sleep(time.Second)
				began := time.Now()
				require.NoError(t, srv.RestartKinesis(t.Context()))
				t.Logf("kinesis-local restarted in %v", time.Since(began).Round(time.Millisecond))
				time.Sleep(time.Second)
				close(stop)
				outcomes := <-during

				after := createLanes(t.Context(), b, "after", 8, 0, 3)
				requireAllOK(t, after, "after the restart")
				res := checkCreates(t, srv, stream, append(outcomes, after...))
				assert.Positive(t, res.ok)
			})
		})
	}
}

// TestCreateThrottledUnderLoad throttles PutRecord, which no emulator does, under concurrent
// callers: with time to retry every record lands exactly once (a throttled request writes
// nothing, so a retry cannot duplicate); without it every call fails, says so, and writes nothing.
func TestCreateThrottledUnderLoad(t *testing.T) {
	t.Parallel()
	srv := localaws.Get(t)
	stream := localaws.NewStreamOn(t, srv, 2)
	props := withProps(serverProps(srv, stream, srv.KinesisEndpoint, srv.DynamoDBEndpoint), outputPaths["PutRecord"])

	// Each record's first 0 to 3 attempts are rejected (by a hash of its data), so every record
	// lands in the end and some only after a run of consecutive rejections.
	var mu sync.Mutex
	attempts := map[string]int{}
	some := newFaultClient(func(op string, _ int, req *http.Request) *http.Response {
		if op != "PutRecord" {
			return nil
		}
		data := peekPutRecordData(t, req)
		h := fnv.New32a()
		_, _ = h.Write([]byte(data))
		mu.Lock()
		defer mu.Unlock()
		attempts[data]++
		if attempts[data] <= int(h.Sum32()%4) {
			return throttled(req)
		}
		return nil
	})
	all := newFaultClient(func(op string, _ int, req *http.Request) *http.Response {
		if op == "PutRecord" {
			return throttled(req)
		}
		return nil
	})
	patient := newBinding(t, props, func(b *AWSKinesis) { b.sdkHTTPClient = some })
	hopeless := newBinding(t, props, func(b *AWSKinesis) { b.sdkHTTPClient = all })
	described(t, hopeless)

	var doomed []createOutcome
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Long enough for a throttled answer on a loaded machine (the stream was described before):
		// a deadline before any throttled answer gives the deadline's error, not ErrThrottled.
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		doomed = createLanes(ctx, hopeless, "doomed", 8, 0, 1)
	}()
	outcomes := createLanes(t.Context(), patient, "thr", 8, 0, 10)
	wg.Wait()

	requireAllOK(t, outcomes, "throttled with time to retry")
	for _, o := range doomed {
		require.ErrorIs(t, o.err, ErrThrottled, o.data)
		assert.Less(t, o.took, 5*time.Second, "the caller's deadline bounds the retries")
	}
	res := checkCreates(t, srv, stream, append(outcomes, doomed...))
	assert.Zero(t, res.duplicates, "a throttled request writes nothing; a retry must not duplicate")
	assert.Equal(t, len(outcomes), res.inStream, "none of the doomed records may be in the stream")
	assert.Greater(t, some.count("PutRecord"), len(outcomes), "throttling was retried")
	t.Logf("PutRecord calls: %d for %d records", some.count("PutRecord"), len(outcomes))
}

// peekPutRecordData returns the data of a PutRecord request and leaves the body readable.
func peekPutRecordData(t *testing.T, req *http.Request) string {
	raw, err := io.ReadAll(req.Body)
	require.NoError(t, err)
	_ = req.Body.Close()
	req.Body = io.NopCloser(bytes.NewReader(raw))
	var in struct{ Data []byte }
	require.NoError(t, json.Unmarshal(raw, &in))
	return string(in.Data)
}

// withProps returns props with extra set.
func withProps(props, extra map[string]string) map[string]string {
	props = maps.Clone(props)
	maps.Copy(props, extra)
	return props
}
