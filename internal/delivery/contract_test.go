package delivery

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	kplrecords "github.com/awslabs/kinesis-aggregation/go/v2/records"
	"github.com/golang/protobuf/proto" //nolint:staticcheck // the KPL record types are generated for it
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/testlog"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/kit/logger"
)

// The contract is driven here as the engine drives it: one Deliver per batch, from one goroutine.

const testShard = "shardId-000000000007"

// recorder records every handler call; fail decides a call's outcome.
type recorder struct {
	mu    sync.Mutex
	calls []*bindings.ReadResponse
	at    []time.Time
	fail  func(call int, r *bindings.ReadResponse) error
}

func (h *recorder) handle(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
	h.mu.Lock()
	h.calls = append(h.calls, r)
	h.at = append(h.at, time.Now())
	n := len(h.calls)
	fail := h.fail
	h.mu.Unlock()
	if fail != nil {
		return nil, fail(n, r)
	}
	return nil, nil
}

func (h *recorder) data() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, len(h.calls))
	for i, c := range h.calls {
		out[i] = string(c.Data)
	}
	return out
}

func (h *recorder) count(data string) int {
	n := 0
	for _, d := range h.data() {
		if d == data {
			n++
		}
	}
	return n
}

// failingOn always fails the record with the given data and signals its first failure.
func failingOn(data string) (*recorder, <-chan struct{}) {
	failing := make(chan struct{}, 1)
	return &recorder{fail: func(_ int, r *bindings.ReadResponse) error {
		if string(r.Data) != data {
			return nil
		}
		select {
		case failing <- struct{}{}:
		default:
		}
		return errors.New("app unavailable")
	}}, failing
}

func records(seqs ...string) []types.Record {
	recs := make([]types.Record, len(seqs))
	arrival := time.Date(2026, 11, 26, 8, 30, 0, 123_000_000, time.FixedZone("CET", 3600))
	for i, s := range seqs {
		recs[i] = types.Record{
			SequenceNumber:              aws.String(s),
			PartitionKey:                aws.String("pk-" + s),
			Data:                        []byte("rec-" + s),
			ApproximateArrivalTimestamp: aws.Time(arrival),
		}
	}
	return recs
}

// kplAggregate encodes user records as the KPL does: magic, protobuf AggregatedRecord, MD5 of it.
func kplAggregate(t testing.TB, keys []string, data ...string) []byte {
	t.Helper()
	agg := &kplrecords.AggregatedRecord{PartitionKeyTable: keys}
	for i, d := range data {
		idx := uint64(i % len(keys))
		agg.Records = append(agg.Records, &kplrecords.Record{PartitionKeyIndex: &idx, Data: []byte(d)})
	}
	body, err := proto.Marshal(agg)
	require.NoError(t, err)
	sum := md5.Sum(body)
	return append(append(append([]byte(nil), kplMagic...), body...), sum[:]...)
}

// aggregateRecord is one Kinesis record holding n user records agg-<seq>-<i> keyed agg-pk-<i>.
func aggregateRecord(t testing.TB, seq string, n int) types.Record {
	keys := make([]string, n)
	data := make([]string, n)
	for i := range n {
		keys[i] = fmt.Sprintf("agg-pk-%d", i)
		data[i] = fmt.Sprintf("agg-%s-%d", seq, i)
	}
	return types.Record{SequenceNumber: aws.String(seq), PartitionKey: aws.String("agg"), Data: kplAggregate(t, keys, data...)}
}

func newTestShard(h *recorder, log logger.Logger, s Settings, checkpoint string) *Shard {
	if s.RetryInitial == 0 {
		s.RetryInitial, s.RetryMax = time.Millisecond, 5*time.Millisecond
	}
	if s.StreamName == "" {
		s.StreamName = "orders"
	}
	return NewShard(h.handle, s, testShard, checkpoint, log)
}

func TestDeliversInOrderWithMetadata(t *testing.T) {
	t.Parallel()
	h := &recorder{}
	sh := newTestShard(h, logger.NewLogger(t.Name()), Settings{}, "")

	cp, complete := drive(sh, t.Context(), t.Context(), records("100", "200", "300"))

	assert.Equal(t, []string{"rec-100", "rec-200", "rec-300"}, h.data())
	assert.Equal(t, map[string]string{
		"shardId":                     testShard,
		"sequenceNumber":              "200",
		"partitionKey":                "pk-200",
		"streamName":                  "orders",
		"approximateArrivalTimestamp": "2026-11-26T07:30:00.123Z",
	}, h.calls[1].Metadata)
	assert.Equal(t, "300", cp)
	assert.True(t, complete)
}

func TestRetriesAFailedRecordWithCappedBackoffBeforeTheNextOne(t *testing.T) {
	t.Parallel()
	h := &recorder{fail: func(call int, r *bindings.ReadResponse) error {
		if string(r.Data) == "rec-200" && call < 9 {
			return errors.New("app unavailable")
		}
		return nil
	}}
	log, logs := testlog.New(t)
	sh := newTestShard(h, log, Settings{RetryInitial: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond}, "")

	began := time.Now()
	cp, complete := drive(sh, t.Context(), t.Context(), records("100", "200", "300"))
	t.Logf("7 retries took %v", time.Since(began))

	assert.Equal(t, []string{"rec-100", "rec-200", "rec-200", "rec-200", "rec-200", "rec-200", "rec-200", "rec-200", "rec-200", "rec-300"}, h.data(),
		"the failed record is retried in place; the next one waits")
	for i := 2; i < 9; i++ {
		gap := h.at[i].Sub(h.at[i-1])
		lo := min(50*time.Millisecond<<(i-2), 100*time.Millisecond) / 2 // jitter spreads a wait over [d/2, d]
		assert.GreaterOrEqual(t, gap, lo, "wait before attempt %d", i)
		// Uncapped, the 6th and 7th waits would be at least 800 and 1600 ms.
		assert.Less(t, gap, 700*time.Millisecond, "wait before attempt %d is capped at retryMaxInterval", i)
	}
	assert.Equal(t, "300", cp)
	assert.True(t, complete)
	assert.Contains(t, logs.String(), "Handler failed, delivering the record again")
}

func TestSkipsARecordAfterMaxDeliveryAttempts(t *testing.T) {
	t.Parallel()
	h, _ := failingOn("rec-200")
	log, logs := testlog.New(t)
	log.EnableJSONOutput(true)
	sh := newTestShard(h, log, Settings{MaxAttempts: 3}, "")

	cp, complete := drive(sh, t.Context(), t.Context(), records("100", "200", "300"))

	assert.Equal(t, 3, h.count("rec-200"))
	assert.Equal(t, 1, h.count("rec-300"), "delivery goes on after the skipped record")
	assert.Equal(t, "300", cp, "a skipped record counts as done")
	assert.True(t, complete)
	var skipped string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "skipping the record") {
			skipped = line
		}
	}
	require.NotEmpty(t, skipped, "the skip is logged")
	assert.Contains(t, skipped, `"level":"error"`)
	assert.Contains(t, skipped, `"shardId":"`+testShard+`"`)
	assert.Contains(t, skipped, `"sequenceNumber":"200"`)
}

func TestStoppedMidRetryLeavesTheRecordAndDeliversNothingMore(t *testing.T) {
	t.Parallel()
	h, failing := failingOn("rec-300")
	sh := newTestShard(h, logger.NewLogger(t.Name()), Settings{RetryInitial: 10 * time.Millisecond, RetryMax: 10 * time.Millisecond}, "")
	stop, cancel := context.WithCancel(t.Context())

	type result struct {
		cp       string
		complete bool
	}
	done := make(chan result, 1)
	go func() {
		cp, complete := drive(sh, stop, t.Context(), records("100", "200", "300", "400"))
		done <- result{cp, complete}
	}()
	<-failing
	cancel()
	var got result
	select {
	case got = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Deliver did not return after stop")
	}
	assert.Equal(t, "200", got.cp, "done up to the record before the failing one")
	assert.False(t, got.complete)
	assert.Zero(t, h.count("rec-400"), "nothing after the failing record")

	calls := len(h.data())
	cp, complete := drive(sh, stop, t.Context(), records("500"))
	assert.Len(t, h.data(), calls, "nothing is delivered once stopping")
	assert.Equal(t, "200", cp, "the watermark stays before the failing record")
	assert.False(t, complete)
}

func TestCheckpointsAndResumesInsideAnAggregate(t *testing.T) {
	t.Parallel()
	h, failing := failingOn("agg-200-3")
	sh := newTestShard(h, logger.NewLogger(t.Name()), Settings{RetryInitial: 10 * time.Millisecond, RetryMax: 10 * time.Millisecond}, "")
	batch := append(records("100"), aggregateRecord(t, "200", 5))
	batch = append(batch, records("300")...)
	stop, cancel := context.WithCancel(t.Context())

	done := make(chan string, 1)
	go func() {
		cp, _ := drive(sh, stop, t.Context(), batch)
		done <- cp
	}()
	<-failing
	cancel()
	assert.Equal(t, "200:2", <-done, "user records 0-2 of the aggregate are done")
	assert.Equal(t, "2", h.calls[3].Metadata["subSequenceNumber"])
	assert.Equal(t, "200", h.calls[3].Metadata["sequenceNumber"])
	assert.Equal(t, "agg-pk-2", h.calls[3].Metadata["partitionKey"], "a user record carries its own key")
	assert.NotContains(t, h.calls[0].Metadata, "subSequenceNumber", "a plain record has no sub-sequence number")

	// The next owner reads AT the aggregate and skips what was delivered.
	h2 := &recorder{}
	sh2 := newTestShard(h2, logger.NewLogger(t.Name()), Settings{}, "200:2")
	cp, complete := drive(sh2, t.Context(), t.Context(), batch[1:])
	assert.Equal(t, []string{"agg-200-3", "agg-200-4", "rec-300"}, h2.data())
	assert.Equal(t, "300", cp)
	assert.True(t, complete)

	// A checkpoint on the aggregate's last user record is the plain sequence number.
	h3 := &recorder{}
	sh3 := newTestShard(h3, logger.NewLogger(t.Name()), Settings{}, "")
	cp, _ = drive(sh3, t.Context(), t.Context(), batch[1:2])
	assert.Equal(t, "200", cp)
}

func TestUndecodableAggregateIsDeliveredAsStored(t *testing.T) {
	t.Parallel()
	body := []byte{0xff, 0xff, 0xff} // not a protobuf message
	sum := md5.Sum(body)
	bad := append(append(append([]byte(nil), kplMagic...), body...), sum[:]...)
	// A valid protobuf whose record points past the key table: awslabs' de-aggregator would panic.
	idx := uint64(5)
	outOfRange, err := proto.Marshal(&kplrecords.AggregatedRecord{PartitionKeyTable: []string{"k"}, Records: []*kplrecords.Record{{PartitionKeyIndex: &idx, Data: []byte("x")}}})
	require.NoError(t, err)
	sum2 := md5.Sum(outOfRange)
	corrupt := append(append(append([]byte(nil), kplMagic...), outOfRange...), sum2[:]...)
	empty := kplAggregate(t, []string{"k"})
	recs := []types.Record{
		aggregateRecord(t, "1", 2),
		{SequenceNumber: aws.String("2"), PartitionKey: aws.String("k"), Data: bad},
		{SequenceNumber: aws.String("3"), PartitionKey: aws.String("k"), Data: corrupt},
		{SequenceNumber: aws.String("4"), PartitionKey: aws.String("k"), Data: empty},
		{SequenceNumber: aws.String("5"), PartitionKey: aws.String("k"), Data: []byte("plain")},
	}
	h := &recorder{}
	sh := newTestShard(h, logger.NewLogger(t.Name()), Settings{}, "")

	cp, complete := drive(sh, t.Context(), t.Context(), recs)

	assert.Equal(t, []string{"agg-1-0", "agg-1-1", string(bad), string(corrupt), "plain"}, h.data(), "nothing dropped")
	for _, i := range []int{2, 3} {
		assert.Contains(t, h.calls[i].Metadata[MetaAggregateError], "malformed KPL aggregate")
		assert.NotContains(t, h.calls[i].Metadata, MetaSubSequenceNumber)
	}
	assert.NotContains(t, h.calls[4].Metadata, MetaAggregateError)
	assert.Equal(t, "5", cp)
	assert.True(t, complete)
}

// FuzzDeaggregation: no record makes expansion panic or lose data: a record is delivered whole or as
// user records carrying its sequence number, and plain records around it are kept.
func FuzzDeaggregation(f *testing.F) {
	f.Add([]byte("plain"), []byte{0xf3, 0x89, 0x9a, 0xc2, 0x0a, 0x01, 0x6b})
	f.Add([]byte{0xf3, 0x89, 0x9a, 0xc2}, []byte("x"))
	f.Add([]byte{}, append([]byte{0xf3, 0x89, 0x9a, 0xc2}, make([]byte, 16)...))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		for i, data := range [][]byte{a, b} {
			seq := strconv.Itoa(i + 1)
			users := userRecords(types.Record{SequenceNumber: aws.String(seq), Data: data, PartitionKey: aws.String("k")})
			for j, u := range users {
				if u.pos.Seq != seq || u.of != len(users) {
					t.Fatalf("user record %d of %d has position %+v", j, len(users), u.pos)
				}
				if len(users) == 1 && u.pos.Sub < 0 && !bytes.Equal(u.rec.Data, data) {
					t.Fatalf("a record delivered whole was changed")
				}
			}
		}
	})
}

// drive runs the contract as the engine's worker does: it adds the batch and dispatches until every
// record added is done or stop ends, then waits for the calls in flight. It returns the watermark and
// whether every record is done.
func drive(sh *Shard, stop, handlerCtx context.Context, recs []types.Record) (checkpoint string, complete bool) {
	sh.Add(recs)
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for !sh.Idle() && stop.Err() == nil {
		if due := sh.Dispatch(stop, handlerCtx); !due.IsZero() {
			retry.Reset(time.Until(due))
		}
		if sh.Idle() {
			break // Dispatch skipped the last records without a call
		}
		select {
		case r := <-sh.Finished():
			sh.Complete(stop, r)
		case <-retry.C:
		case <-stop.Done():
		}
	}
	for sh.InFlight() > 0 {
		sh.Complete(stop, <-sh.Finished())
	}
	return sh.Checkpoint(), sh.Idle()
}
