package kinesis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	"github.com/vmware/vmware-go-kcl-v2/clientlibrary/config"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"
	kclworker "github.com/vmware/vmware-go-kcl-v2/clientlibrary/worker"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/kit/logger"
)

// These tests drive the record processor as KCL does (Initialize, ProcessRecords, Shutdown from one
// goroutine) with KCL's own checkpointer on a real lease table (dynalite), without a stream.

const procShard = "shardId-000000000007"

// procLeases is a lease table on dynalite in which worker "me" owns procShard.
type procLeases struct {
	*leaseStore
	shard *par.ShardStatus
}

func newProcLeases(t *testing.T) *procLeases {
	t.Helper()
	s := newDynaliteLeaseStore(t, "me", "")
	l := &procLeases{leaseStore: s, shard: &par.ShardStatus{ID: procShard, Mux: &sync.RWMutex{}, AssignedTo: "me"}}
	l.setOwner(t, procShard, "me")
	l.lineage.observe([]types.Shard{{ShardId: aws.String(procShard)}})
	return l
}

// newDynaliteLeaseStore is worker's lease store on a lease table on dynalite, a new one when table is
// "". The table is deleted when the test ends.
func newDynaliteLeaseStore(t *testing.T, worker, table string) *leaseStore {
	t.Helper()
	srv := localaws.Get(t)
	db := srv.DynamoDBClient()
	if table == "" {
		table = localaws.UniqueName("leases")
		require.NoError(t, ensureLeaseTable(t.Context(), db, table, logger.NewLogger(t.Name())))
		t.Cleanup(func() {
			_, _ = db.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
		})
	}
	cfg := config.NewKinesisClientLibConfig("app", "stream", localaws.Region, worker).WithTableName(table)
	return &leaseStore{
		kclStore:     chk.NewDynamoCheckpoint(cfg).WithDynamoDB(db),
		db:           db,
		table:        table,
		workerID:     worker,
		lineage:      newShardLineage(srv.KinesisClient(), "stream", nil),
		log:          logger.NewLogger(t.Name()),
		abortCtx:     t.Context(),
		parentPoll:   20 * time.Millisecond,
		scanEvery:    time.Second,
		claimTimeout: 10 * time.Second,
		held:         map[string]struct{}{},
		claimed:      map[string]time.Time{},
	}
}

func (l *procLeases) setOwner(t *testing.T, shardID, owner string) {
	t.Helper()
	_, err := l.db.UpdateItem(t.Context(), &dynamodb.UpdateItemInput{
		TableName:                 aws.String(l.table),
		Key:                       shardKey(shardID),
		UpdateExpression:          aws.String("SET AssignedTo = :o, LeaseTimeout = :t"),
		ExpressionAttributeValues: map[string]dtypes.AttributeValue{":o": &dtypes.AttributeValueMemberS{Value: owner}, ":t": &dtypes.AttributeValueMemberS{Value: time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)}},
	})
	require.NoError(t, err)
}

func (l *procLeases) setCheckpoint(t *testing.T, shardID, cp string) {
	t.Helper()
	_, err := l.db.UpdateItem(t.Context(), &dynamodb.UpdateItemInput{
		TableName:                 aws.String(l.table),
		Key:                       shardKey(shardID),
		UpdateExpression:          aws.String("SET #cp = :cp"),
		ExpressionAttributeNames:  map[string]string{"#cp": chk.SequenceNumberKey},
		ExpressionAttributeValues: map[string]dtypes.AttributeValue{":cp": &dtypes.AttributeValueMemberS{Value: cp}},
	})
	require.NoError(t, err)
}

func (l *procLeases) checkpoint(t *testing.T) string {
	t.Helper()
	item, err := l.getItem(t.Context(), procShard)
	require.NoError(t, err)
	cp, _ := attrString(item, chk.SequenceNumberKey)
	return cp
}

func (l *procLeases) checkpointer() kcl.IRecordProcessorCheckpointer {
	return kclworker.NewRecordProcessorCheckpoint(l.shard, l.leaseStore)
}

// procHandler records every call; fail decides a call's outcome.
type procHandler struct {
	mu    sync.Mutex
	calls []*bindings.ReadResponse
	at    []time.Time
	fail  func(call int, r *bindings.ReadResponse) error
}

func (h *procHandler) handle(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
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

func (h *procHandler) data() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, len(h.calls))
	for i, c := range h.calls {
		out[i] = string(c.Data)
	}
	return out
}

func (h *procHandler) count(data string) int {
	n := 0
	for _, d := range h.data() {
		if d == data {
			n++
		}
	}
	return n
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func capturedLogger(t *testing.T) (logger.Logger, *syncBuffer) {
	log := logger.NewLogger(t.Name())
	buf := &syncBuffer{}
	log.SetOutput(buf)
	log.SetOutputLevel(logger.DebugLevel)
	return log, buf
}

func procRecords(seqs ...string) []types.Record {
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

// aggregate returns n user records as KCL hands them over after de-aggregating one KPL record.
func aggregate(seq string, n int) []types.Record {
	recs := make([]types.Record, n)
	for i := range n {
		recs[i] = types.Record{SequenceNumber: aws.String(seq), PartitionKey: aws.String(fmt.Sprintf("agg-pk-%d", i)), Data: []byte(fmt.Sprintf("agg-%s-%d", seq, i))}
	}
	return recs
}

func newProcDelivery(t *testing.T, h *procHandler, log logger.Logger, s deliverySettings, leases leaseView) *delivery {
	t.Helper()
	if s.retryInitial == 0 {
		s.retryInitial, s.retryMax = time.Millisecond, 5*time.Millisecond
	}
	if s.streamName == "" {
		s.streamName = "orders"
	}
	d := newDelivery(t.Context(), h.handle, log, s, leases)
	t.Cleanup(func() { d.stop(); d.stopHandlers() })
	return d
}

func initialized(d *delivery, checkpoint string) kcl.IRecordProcessor {
	p := d.CreateProcessor()
	p.Initialize(&kcl.InitializationInput{ShardId: procShard, ExtendedSequenceNumber: &kcl.ExtendedSequenceNumber{SequenceNumber: aws.String(checkpoint)}})
	return p
}

func TestProcessorDeliversInOrderWithMetadataAndCheckpointsTheBatch(t *testing.T) {
	t.Parallel()
	leases := newProcLeases(t)
	h := &procHandler{}
	d := newProcDelivery(t, h, logger.NewLogger(t.Name()), deliverySettings{}, leases)
	p := initialized(d, "")

	p.ProcessRecords(&kcl.ProcessRecordsInput{Records: procRecords("100", "200", "300"), Checkpointer: leases.checkpointer()})

	assert.Equal(t, []string{"rec-100", "rec-200", "rec-300"}, h.data())
	assert.Equal(t, map[string]string{
		"shardId":                     procShard,
		"sequenceNumber":              "200",
		"partitionKey":                "pk-200",
		"streamName":                  "orders",
		"approximateArrivalTimestamp": "2026-11-26T07:30:00.123Z",
	}, h.calls[1].Metadata)
	assert.Equal(t, "300", leases.checkpoint(t))
}

func TestProcessorRetriesAFailedRecordWithCappedBackoffBeforeTheNextOne(t *testing.T) {
	t.Parallel()
	leases := newProcLeases(t)
	h := &procHandler{fail: func(call int, r *bindings.ReadResponse) error {
		if string(r.Data) == "rec-200" && call < 9 {
			return errors.New("app unavailable")
		}
		return nil
	}}
	log, logs := capturedLogger(t)
	// Doubling from 50 ms without a cap, the 7 waits would take at least 25+50+...+1600 ms = 3.2 s;
	// capped at 100 ms they take at most 50+6*100 ms.
	d := newProcDelivery(t, h, log, deliverySettings{retryInitial: 50 * time.Millisecond, retryMax: 100 * time.Millisecond}, leases)
	p := initialized(d, "")

	began := time.Now()
	p.ProcessRecords(&kcl.ProcessRecordsInput{Records: procRecords("100", "200", "300"), Checkpointer: leases.checkpointer()})
	took := time.Since(began)

	assert.Equal(t, []string{"rec-100", "rec-200", "rec-200", "rec-200", "rec-200", "rec-200", "rec-200", "rec-200", "rec-200", "rec-300"}, h.data(),
		"the failed record is retried in place; the next one waits")
	assert.Less(t, took, 2*time.Second, "the backoff is capped at retryMaxInterval")
	for i := 2; i < 9; i++ {
		gap := h.at[i].Sub(h.at[i-1])
		want := min(50*time.Millisecond<<(i-2), 100*time.Millisecond) / 2 // jitter spreads a wait over [d/2, d]
		assert.GreaterOrEqual(t, gap, want, "wait before attempt %d", i)
	}
	assert.Equal(t, "300", leases.checkpoint(t))
	assert.Contains(t, logs.String(), "Handler failed, delivering the record again")
}

func TestProcessorSkipsARecordAfterMaxDeliveryAttempts(t *testing.T) {
	t.Parallel()
	leases := newProcLeases(t)
	h := &procHandler{fail: func(_ int, r *bindings.ReadResponse) error {
		if string(r.Data) == "rec-200" {
			return errors.New("poison")
		}
		return nil
	}}
	log, logs := capturedLogger(t)
	log.EnableJSONOutput(true)
	d := newProcDelivery(t, h, log, deliverySettings{maxAttempts: 3}, leases)
	p := initialized(d, "")

	p.ProcessRecords(&kcl.ProcessRecordsInput{Records: procRecords("100", "200", "300"), Checkpointer: leases.checkpointer()})

	assert.Equal(t, 3, h.count("rec-200"))
	assert.Equal(t, 1, h.count("rec-300"), "delivery goes on after the skipped record")
	assert.Equal(t, "300", leases.checkpoint(t), "a skipped record counts as done")
	var skipped string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "skipping the record") {
			skipped = line
		}
	}
	require.NotEmpty(t, skipped, "the skip is logged")
	assert.Contains(t, skipped, `"level":"error"`)
	assert.Contains(t, skipped, `"shardId":"`+procShard+`"`)
	assert.Contains(t, skipped, `"sequenceNumber":"200"`)
}

func TestProcessorStoppedMidRetryLeavesTheRecordAndDeliversNothingMore(t *testing.T) {
	t.Parallel()
	leases := newProcLeases(t)
	h, failing := failingOn("rec-300")
	d := newProcDelivery(t, h, logger.NewLogger(t.Name()), deliverySettings{retryInitial: 10 * time.Millisecond, retryMax: 10 * time.Millisecond}, leases)
	p := initialized(d, "")

	done := make(chan struct{})
	go func() {
		defer close(done)
		p.ProcessRecords(&kcl.ProcessRecordsInput{Records: procRecords("100", "200", "300", "400"), Checkpointer: leases.checkpointer()})
	}()
	<-failing
	d.stop()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ProcessRecords did not return after stop")
	}

	assert.Equal(t, "200", leases.checkpoint(t), "checkpointed up to the record before the failing one")
	assert.Zero(t, h.count("rec-400"), "nothing after the failing record")

	// KCL may call again before it sees its own stop signal; and at the end of a shard, Shutdown.
	calls := len(h.data())
	p.ProcessRecords(&kcl.ProcessRecordsInput{Records: procRecords("500"), Checkpointer: leases.checkpointer()})
	p.Shutdown(&kcl.ShutdownInput{ShutdownReason: kcl.TERMINATE, Checkpointer: leases.checkpointer()})
	assert.Len(t, h.data(), calls, "nothing is delivered once stopping")
	assert.Equal(t, "200", leases.checkpoint(t), "a shard left unfinished is not marked SHARD_END")
}

func TestProcessorMarksAFinishedShard(t *testing.T) {
	t.Parallel()
	leases := newProcLeases(t)
	h := &procHandler{}
	d := newProcDelivery(t, h, logger.NewLogger(t.Name()), deliverySettings{}, leases)
	p := initialized(d, "")

	p.ProcessRecords(&kcl.ProcessRecordsInput{Records: procRecords("100"), Checkpointer: leases.checkpointer()})
	p.Shutdown(&kcl.ShutdownInput{ShutdownReason: kcl.REQUESTED, Checkpointer: leases.checkpointer()})
	assert.Equal(t, "100", leases.checkpoint(t), "a requested shutdown leaves the checkpoint")
	p.Shutdown(&kcl.ShutdownInput{ShutdownReason: kcl.TERMINATE, Checkpointer: leases.checkpointer()})
	assert.Equal(t, chk.ShardEnd, leases.checkpoint(t))
}

func TestProcessorLeavesTheRecordWhenTheLeaseIsLost(t *testing.T) {
	t.Parallel()
	leases := newProcLeases(t)
	h, failing := failingOn("rec-300")
	d := newProcDelivery(t, h, logger.NewLogger(t.Name()), deliverySettings{retryInitial: 10 * time.Millisecond, retryMax: 20 * time.Millisecond}, leases)
	d.leaseCheck = 0
	p := initialized(d, "")

	done := make(chan struct{})
	go func() {
		defer close(done)
		p.ProcessRecords(&kcl.ProcessRecordsInput{Records: procRecords("100", "200", "300", "400"), Checkpointer: leases.checkpointer()})
	}()
	<-failing
	leases.setOwner(t, procShard, "other") // another replica took the shard over (e.g. after a steal)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ProcessRecords kept retrying after the lease was lost")
	}
	assert.Zero(t, h.count("rec-400"))
	assert.Empty(t, leases.checkpoint(t), "a worker that lost the lease does not write the new owner's checkpoint")
	item, err := leases.getItem(t.Context(), procShard)
	require.NoError(t, err)
	owner, _ := attrString(item, chk.LeaseOwnerKey)
	assert.Equal(t, "other", owner)
}

func TestProcessorCheckpointsAndResumesInsideAnAggregate(t *testing.T) {
	t.Parallel()
	leases := newProcLeases(t)
	failing := make(chan struct{}, 1)
	failAt := "agg-200-3"
	h := &procHandler{fail: func(_ int, r *bindings.ReadResponse) error {
		if string(r.Data) == failAt {
			select {
			case failing <- struct{}{}:
			default:
			}
			return errors.New("app unavailable")
		}
		return nil
	}}
	d := newProcDelivery(t, h, logger.NewLogger(t.Name()), deliverySettings{retryInitial: 10 * time.Millisecond, retryMax: 10 * time.Millisecond}, leases)
	p := initialized(d, "")
	batch := append(procRecords("100"), aggregate("200", 5)...)
	batch = append(batch, procRecords("300")...)

	done := make(chan struct{})
	go func() {
		defer close(done)
		p.ProcessRecords(&kcl.ProcessRecordsInput{Records: batch, Checkpointer: leases.checkpointer()})
	}()
	<-failing
	d.stop()
	<-done

	assert.Equal(t, "200:2", leases.checkpoint(t), "user records 0-2 of the aggregate are done")
	assert.Equal(t, "2", h.calls[3].Metadata["subSequenceNumber"])
	assert.Equal(t, "200", h.calls[3].Metadata["sequenceNumber"])
	assert.NotContains(t, h.calls[0].Metadata, "subSequenceNumber", "a plain record has no sub-sequence number")

	// The next owner resumes AT the aggregate (kclclient.go) and skips what was delivered.
	h2 := &procHandler{}
	d2 := newProcDelivery(t, h2, logger.NewLogger(t.Name()), deliverySettings{}, leases)
	p2 := initialized(d2, "200:2")
	p2.ProcessRecords(&kcl.ProcessRecordsInput{Records: batch[1:], Checkpointer: leases.checkpointer()})
	assert.Equal(t, []string{"agg-200-3", "agg-200-4", "rec-300"}, h2.data())
	assert.Equal(t, "300", leases.checkpoint(t))
}

func TestProcessorWaitsForBothParentsOfAMergedShard(t *testing.T) {
	t.Parallel()
	leases := newProcLeases(t)
	const p1, p2 = "shardId-000000000001", "shardId-000000000002"
	leases.lineage.observe([]types.Shard{
		{ShardId: aws.String(p1)}, {ShardId: aws.String(p2)},
		{ShardId: aws.String(procShard), ParentShardId: aws.String(p1), AdjacentParentShardId: aws.String(p2)},
	})
	leases.setOwner(t, p1, "someone")
	leases.setCheckpoint(t, p1, chk.ShardEnd)
	leases.setOwner(t, p2, "someone")
	leases.setCheckpoint(t, p2, "12345") // the adjacent parent is still being read

	h := &procHandler{}
	d := newProcDelivery(t, h, logger.NewLogger(t.Name()), deliverySettings{}, leases)
	initDone := make(chan kcl.IRecordProcessor)
	go func() { initDone <- initialized(d, "") }()
	select {
	case <-initDone:
		t.Fatal("the child started while its adjacent parent was unfinished")
	case <-time.After(300 * time.Millisecond):
	}
	leases.setCheckpoint(t, p2, chk.ShardEnd)
	var p kcl.IRecordProcessor
	select {
	case p = <-initDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the child did not start once both parents were finished")
	}
	p.ProcessRecords(&kcl.ProcessRecordsInput{Records: procRecords("100"), Checkpointer: leases.checkpointer()})
	assert.Equal(t, []string{"rec-100"}, h.data())
}

func TestProcessorStopEndsTheWaitForParents(t *testing.T) {
	t.Parallel()
	leases := newProcLeases(t)
	const parent = "shardId-000000000001"
	leases.lineage.observe([]types.Shard{{ShardId: aws.String(parent)}, {ShardId: aws.String(procShard), ParentShardId: aws.String(parent)}})
	leases.setOwner(t, parent, "someone")
	leases.setCheckpoint(t, parent, "12345")

	h := &procHandler{}
	d := newProcDelivery(t, h, logger.NewLogger(t.Name()), deliverySettings{}, leases)
	initDone := make(chan kcl.IRecordProcessor)
	go func() { initDone <- initialized(d, "") }()
	time.Sleep(100 * time.Millisecond)
	d.stop()
	select {
	case p := <-initDone:
		p.ProcessRecords(&kcl.ProcessRecordsInput{Records: procRecords("100"), Checkpointer: leases.checkpointer()})
		assert.Empty(t, h.data())
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not end the wait for the parent")
	}
}

func TestCheckpointPositions(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "7", position{seq: "7", sub: -1}.checkpoint(1))
	assert.Equal(t, "7:0", position{seq: "7", sub: 0}.checkpoint(3))
	assert.Equal(t, "7", position{seq: "7", sub: 2}.checkpoint(3), "the last user record completes the record")
	p, ok := parseCheckpoint("7:2")
	assert.True(t, ok)
	assert.Equal(t, position{seq: "7", sub: 2}, p)
	for _, cp := range []string{"", "7", chk.ShardEnd, ":1", "7:x", "7:-1"} {
		_, ok := parseCheckpoint(cp)
		assert.False(t, ok, cp)
	}
}

func TestKCLLogLevels(t *testing.T) {
	t.Parallel()
	cases := []struct {
		level       logrus.Level
		format, msg string
		want        logrus.Level
	}{
		{logrus.InfoLevel, "Start polling shard consumer for shard: %v", "", logrus.InfoLevel},
		{logrus.InfoLevel, "Creating DynamoDB session", "", logrus.DebugLevel},
		{logrus.ErrorLevel, "Cannot get lease: %+v", "Cannot get lease: shard is already claimed by another node", logrus.DebugLevel},
		{logrus.ErrorLevel, "Error in waiting for parent shard: %v to finish. Error: %+v", "... " + errConsumerStopping.Error(), logrus.DebugLevel},
		{logrus.ErrorLevel, "Error getting records from Kinesis that cannot be retried: %+v", "... AccessDeniedException", logrus.ErrorLevel},
		{logrus.WarnLevel, "Error in rebalance: %+v", "Error in rebalance: AssignedToNotFoundForShard", logrus.DebugLevel},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, kclLevel(c.level, c.format, c.msg), c.format)
	}
}

// failingOn is a handler that always fails the record with the given data, and signals its first
// failure on the returned channel.
func failingOn(data string) (*procHandler, <-chan struct{}) {
	failing := make(chan struct{}, 1)
	return &procHandler{fail: func(_ int, r *bindings.ReadResponse) error {
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
