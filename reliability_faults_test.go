package kinesis

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/faultproxy"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr/components-contrib/bindings"
)

// Helpers shared by the fault and crash tests: proxies, a recording handler, a paced producer
// of known records, and the at-least-once check.

// newFaultProxy puts a fault proxy in front of target (an endpoint URL) for the test's lifetime.
func newFaultProxy(t testing.TB, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// privateServers starts emulators of the test's own, with kinesis-local's data kept across
// RestartKinesis; the package's shared servers must never be restarted under other tests.
func privateServers(t testing.TB) *localaws.Servers {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := localaws.Start(ctx, localaws.Options{PersistDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Stop()) })
	return srv
}

// serverProps is the component metadata of a binding on srv, reaching Kinesis and DynamoDB at
// the given endpoints (the servers' own or proxies in front of them).
func serverProps(srv *localaws.Servers, stream, kinesisEndpoint, dynamoEndpoint string) map[string]string {
	return map[string]string{
		"streamName":       stream,
		"region":           srv.Region,
		"endpoint":         kinesisEndpoint,
		"dynamoDBEndpoint": dynamoEndpoint,
		"accessKey":        localaws.AccessKeyID,
		"secretKey":        localaws.SecretAccessKey,
	}
}

// withConsumer adds what the input side needs: a consumer (and lease table) of the test's own,
// reading from the start of the stream, with a short lease so that a lost lease is retaken fast.
func withConsumer(props map[string]string, mode consumerMode) map[string]string {
	props = maps.Clone(props)
	props["consumerName"] = localaws.UniqueName("consumer")
	props["mode"] = string(mode)
	props["initialPosition"] = string(positionTrimHorizon)
	props["leaseDuration"] = "3s"
	return props
}

// recorder is a handler that accepts every record and remembers each delivery in order.
type recorder struct {
	mu    sync.Mutex
	order []string       // data of each delivery, in handler-call order
	count map[string]int // deliveries per record
}

func newRecorder() *recorder { return &recorder{count: map[string]int{}} }

func (r *recorder) handle(_ context.Context, resp *bindings.ReadResponse) ([]byte, error) {
	r.add(string(resp.Data))
	return nil, nil
}

func (r *recorder) add(data string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.order = append(r.order, data)
	r.count[data]++
}

func (r *recorder) deliveries() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.order)
}

// missing returns the records of want not delivered yet.
func (r *recorder) missing(want []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, w := range want {
		if r.count[w] == 0 {
			out = append(out, w)
		}
	}
	return out
}

// waitFor waits until every record of want has been delivered, failing the test after timeout.
func (r *recorder) waitFor(t testing.TB, want []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		missing := r.missing(want)
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d records not delivered within %v, e.g. %v", len(missing), len(want), timeout, head(missing, 5))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// laneRecord is record i of a lane: lanes are partition keys, and each lane's records are put in
// order, so Kinesis keeps that order and a consumer must deliver it.
func laneRecord(prefix string, lane, i int) string { return fmt.Sprintf("%s|%d|%06d", prefix, lane, i) }

func laneKey(lane int) string { return "lane-" + strconv.Itoa(lane) }

func parseLaneRecord(s string) (prefix string, lane, i int, ok bool) {
	parts := strings.Split(s, "|")
	if len(parts) != 3 {
		return "", 0, 0, false
	}
	lane, err1 := strconv.Atoi(parts[1])
	i, err2 := strconv.Atoi(parts[2])
	return parts[0], lane, i, err1 == nil && err2 == nil
}

// putLanes puts records from..to-1 of every lane with PutRecords, straight to the server (the
// producer is not under test here), and returns their data in put order.
func putLanes(ctx context.Context, client *kinesis.Client, stream, prefix string, lanes, from, to int) ([]string, error) {
	var sent []string
	entries := make([]types.PutRecordsRequestEntry, 0, 100)
	flush := func() error {
		if len(entries) == 0 {
			return nil
		}
		out, err := client.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
		if err != nil {
			return fmt.Errorf("put records: %w", err)
		}
		if n := aws.ToInt32(out.FailedRecordCount); n > 0 {
			return fmt.Errorf("put records: %d entries failed", n)
		}
		entries = entries[:0]
		return nil
	}
	for i := from; i < to; i++ {
		for lane := range lanes {
			data := laneRecord(prefix, lane, i)
			entries = append(entries, types.PutRecordsRequestEntry{Data: []byte(data), PartitionKey: aws.String(laneKey(lane))})
			sent = append(sent, data)
			if len(entries) == cap(entries) {
				if err := flush(); err != nil {
					return sent, err
				}
			}
		}
	}
	return sent, flush()
}

// producePaced puts n records per lane in steps of `step`, pausing between steps, so that faults
// started meanwhile land mid-stream. It returns what it put.
func producePaced(t testing.TB, client *kinesis.Client, stream, prefix string, lanes, from, n, step int, pause time.Duration) []string {
	t.Helper()
	var sent []string
	for i := from; i < from+n; i += step {
		got, err := putLanes(t.Context(), client, stream, prefix, lanes, i, min(i+step, from+n))
		require.NoError(t, err)
		sent = append(sent, got...)
		time.Sleep(pause)
	}
	return sent
}

// atLeastOnce is what the deliveries of a run looked like.
type atLeastOnce struct {
	sent, delivered, unique, duplicates int
}

// checkAtLeastOnce fails the test unless every sent record was delivered, nothing else was, and
// each lane was delivered in order, where a record seen again must be part of a replay: per lane,
// no delivery may skip past a record not yet delivered. Replays from an earlier position (after a
// lost lease or a restart, from the last checkpoint) are the only duplicates allowed. order is the
// deliveries of one consumer, in handler-call order.
func checkAtLeastOnce(t testing.TB, sent []string, order []string) atLeastOnce {
	t.Helper()
	res := checkNoneLost(t, sent, order)
	frontier := map[string]int{} // per prefix|lane: the next index never delivered yet
	var skipped []string
	for _, d := range order {
		prefix, lane, i, _ := parseLaneRecord(d)
		key := prefix + "|" + strconv.Itoa(lane)
		switch next := frontier[key]; {
		case i == next:
			frontier[key] = i + 1
		case i > next:
			skipped = append(skipped, fmt.Sprintf("%s delivered before %s", d, laneRecord(prefix, lane, next)))
			frontier[key] = i + 1
		}
	}
	require.Empty(t, head(skipped, 10), "%d deliveries skipped ahead in their lane, which no replay explains", len(skipped))
	return res
}

// checkNoneLost fails the test unless every sent record is among the deliveries (of any number of
// consumers) and nothing else is; duplicates are counted, not judged.
func checkNoneLost(t testing.TB, sent []string, deliveries []string) atLeastOnce {
	t.Helper()
	want := make(map[string]bool, len(sent))
	for _, s := range sent {
		want[s] = true
	}
	seen := map[string]int{}
	var unexpected []string
	for _, d := range deliveries {
		seen[d]++
		if !want[d] {
			unexpected = append(unexpected, d)
		}
	}
	var lost []string
	for _, s := range sent {
		if seen[s] == 0 {
			lost = append(lost, s)
		}
	}
	res := atLeastOnce{sent: len(sent), delivered: len(deliveries), unique: len(seen) - len(unexpected)}
	res.duplicates = res.delivered - len(unexpected) - res.unique
	t.Logf("at-least-once: sent %d, delivered %d (%d distinct), duplicates %d", res.sent, res.delivered, res.unique, res.duplicates)
	require.Empty(t, head(unexpected, 10), "%d deliveries of records that were never sent", len(unexpected))
	require.Empty(t, head(lost, 10), "lost %d of %d records", len(lost), len(sent))
	return res
}

// logLeasesOnFailure shows the lease table of a failed test: who held which shard, and where.
func logLeasesOnFailure(t testing.TB, srv *localaws.Servers, table string) {
	if !t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := srv.DynamoDBClient().Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(table)})
	if err != nil {
		t.Logf("lease table %s: %v", table, err)
		return
	}
	for _, item := range out.Items {
		var b strings.Builder
		for _, k := range slices.Sorted(maps.Keys(item)) {
			if v, ok := item[k].(*dtypes.AttributeValueMemberS); ok {
				fmt.Fprintf(&b, "%s=%s ", k, v.Value)
			} else {
				fmt.Fprintf(&b, "%s=%v ", k, item[k])
			}
		}
		t.Logf("lease: %s", b.String())
	}
}

func head[T any](s []T, n int) []T { return s[:min(n, len(s))] }

// cutEvery cuts every connection through each proxy every interval until the returned stop is
// called, or the test ends; stop returns how many cuts cut something.
func cutEvery(tb testing.TB, interval time.Duration, proxies ...*faultproxy.Proxy) (stop func() int) {
	done := make(chan struct{})
	var cuts int
	var wg sync.WaitGroup
	wg.Go(func() {
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ticker.C:
				for _, p := range proxies {
					if p.CutAll() > 0 {
						cuts++
					}
				}
			}
		}
	})
	var once sync.Once
	stop = func() int {
		once.Do(func() { close(done) })
		wg.Wait()
		return cuts
	}
	// A test that fails before it calls stop must not leave the cutter running past its proxies.
	tb.Cleanup(func() { stop() })
	return stop
}
