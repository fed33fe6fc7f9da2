package localaws

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/testwait"
)

// queueEnv is a queue server in front of the shared kinesis-local, an SDK client whose
// BaseEndpoint is the server (queue and stream calls alike go there) and a fresh on-demand stream.
type queueEnv struct {
	server    *QueueServer
	client    *kinesis.Client
	stream    string
	streamARN string
}

func newQueueEnv(t *testing.T, opts QueueOptions) queueEnv {
	t.Helper()
	s := Get(t)
	qs := NewQueueServerWith(t, s.KinesisEndpoint, opts)
	e := queueEnv{server: qs, client: kinesisClient(s.AWSConfig(), qs.URL())}
	e.stream, e.streamARN = onDemandStream(t, e.client)
	return e
}

// queueSpec is what a test varies in CreateQueue.
type queueSpec struct {
	start      types.QueueStartingPositionType // "" for none
	visibility *int32
	deadLetter *types.DeadLetterConfiguration
}

func (e queueEnv) createInput(name string, spec queueSpec) *kinesis.CreateQueueInput {
	cfg := types.QueueStreamConfiguration{StreamARN: aws.String(e.streamARN)}
	if spec.start != "" {
		cfg.StartingPosition = &types.QueueStartingPosition{Type: spec.start}
	}
	in := &kinesis.CreateQueueInput{QueueName: aws.String(name), StreamConfigurationList: []types.QueueStreamConfiguration{cfg}}
	if spec.visibility != nil || spec.deadLetter != nil {
		in.QueueAttributes = &types.QueueAttributes{VisibilityTimeoutSeconds: spec.visibility, DeadLetterConfiguration: spec.deadLetter}
	}
	return in
}

// createQueue creates a queue on the env's stream and waits until it is ACTIVE.
func (e queueEnv) createQueue(t *testing.T, spec queueSpec) string {
	t.Helper()
	out, err := e.client.CreateQueue(t.Context(), e.createInput(UniqueName("q"), spec))
	require.NoError(t, err)
	arn := aws.ToString(out.QueueDescription.QueueARN)
	e.waitStatus(t, arn, types.QueueStatusActive)
	return arn
}

func (e queueEnv) describe(t *testing.T, arn string) *types.QueueDescription {
	t.Helper()
	out, err := e.client.DescribeQueue(t.Context(), &kinesis.DescribeQueueInput{QueueARN: aws.String(arn)})
	require.NoError(t, err)
	return out.QueueDescription
}

func (e queueEnv) waitStatus(t *testing.T, arn string, status types.QueueStatus) {
	t.Helper()
	testwait.Eventually(t, func() bool { return e.describe(t, arn).QueueStatus == status },
		5*time.Second, 10*time.Millisecond, "queue should become %s", status)
}

// put writes records with data, each with a partition key of its own.
func (e queueEnv) put(t *testing.T, data ...string) {
	t.Helper()
	entries := make([]types.PutRecordsRequestEntry, len(data))
	for i, d := range data {
		entries[i] = types.PutRecordsRequestEntry{Data: []byte(d), PartitionKey: aws.String("key-" + d)}
	}
	out, err := e.client.PutRecords(t.Context(), &kinesis.PutRecordsInput{StreamName: aws.String(e.stream), Records: entries})
	require.NoError(t, err)
	require.Zero(t, aws.ToInt32(out.FailedRecordCount))
}

func (e queueEnv) receive(t *testing.T, arn string, wait int32, visibility *int32) []types.QueueRecord {
	t.Helper()
	out, err := e.client.ReceiveQueueRecords(t.Context(), &kinesis.ReceiveQueueRecordsInput{
		QueueARN: aws.String(arn), WaitTimeSeconds: aws.Int32(wait), VisibilityTimeoutSeconds: visibility,
	})
	require.NoError(t, err)
	return out.QueueRecords
}

func (e queueEnv) receiveDead(t *testing.T, arn string, wait int32) []types.QueueRecord {
	t.Helper()
	out, err := e.client.ReceiveDeadLetterQueueRecords(t.Context(), &kinesis.ReceiveDeadLetterQueueRecordsInput{
		QueueARN: aws.String(arn), WaitTimeSeconds: aws.Int32(wait),
	})
	require.NoError(t, err)
	return out.QueueRecords
}

// receiveOne waits for a single record (kinesis-local shows puts a few ms late, the reader polls).
func (e queueEnv) receiveOne(t *testing.T, arn string, visibility *int32) types.QueueRecord {
	t.Helper()
	got := e.receive(t, arn, 5, visibility)
	require.Len(t, got, 1)
	return got[0]
}

func (e queueEnv) ack(t *testing.T, arn string, handles ...string) *kinesis.AcknowledgeQueueRecordsOutput {
	t.Helper()
	entries := make([]types.AcknowledgeQueueRecordsRequestEntry, len(handles))
	for i, h := range handles {
		entries[i] = types.AcknowledgeQueueRecordsRequestEntry{ReceiptHandle: aws.String(h)}
	}
	out, err := e.client.AcknowledgeQueueRecords(t.Context(), &kinesis.AcknowledgeQueueRecordsInput{QueueARN: aws.String(arn), Entries: entries})
	require.NoError(t, err)
	return out
}

func (e queueEnv) setVisibility(t *testing.T, arn, handle string, seconds int32) *kinesis.UpdateQueueRecordsVisibilityOutput {
	t.Helper()
	out, err := e.client.UpdateQueueRecordsVisibility(t.Context(), &kinesis.UpdateQueueRecordsVisibilityInput{
		QueueARN: aws.String(arn),
		Entries:  []types.UpdateQueueRecordsVisibilityRequestEntry{{ReceiptHandle: aws.String(handle), VisibilityTimeoutSeconds: aws.Int32(seconds)}},
	})
	require.NoError(t, err)
	return out
}

func builtIn(n int32) *types.DeadLetterConfiguration {
	return &types.DeadLetterConfiguration{TargetType: types.TargetTypeBuiltIn, MaxReceiveCount: aws.Int32(n)}
}

func TestQueueLifecycle(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{ActivationDelay: 300 * time.Millisecond})
	out, err := e.client.CreateQueue(t.Context(), e.createInput("orders", queueSpec{start: types.QueueStartingPositionTypeTrimHorizon}))
	require.NoError(t, err)
	d := out.QueueDescription
	arn := aws.ToString(d.QueueARN)
	assert.Regexp(t, `^arn:aws:kinesis:us-east-1:\d{12}:queue/[a-z0-9]{1,63}$`, arn, "the id must be a DNS label")
	assert.Equal(t, types.QueueStatusCreating, d.QueueStatus)
	assert.Equal(t, "orders", aws.ToString(d.QueueName))
	assert.Nil(t, d.StreamConfigurationList[0].StartingPosition.Timestamp, "not yet determined while CREATING")
	assert.Equal(t, int32(30), aws.ToInt32(d.QueueAttributes.VisibilityTimeoutSeconds), "the default")
	assert.Equal(t, builtIn(6), d.QueueAttributes.DeadLetterConfiguration, "the default")
	_, err = e.client.ReceiveQueueRecords(t.Context(), &kinesis.ReceiveQueueRecordsInput{QueueARN: aws.String(arn)})
	requireAPIError(t, err, "ResourceInUseException")

	e.waitStatus(t, arn, types.QueueStatusActive)
	assert.NotNil(t, e.describe(t, arn).StreamConfigurationList[0].StartingPosition.Timestamp, "set once ACTIVE")

	_, err = e.client.CreateQueue(t.Context(), e.createInput("orders", queueSpec{}))
	requireAPIError(t, err, "ResourceInUseException")

	upd, err := e.client.UpdateQueue(t.Context(), &kinesis.UpdateQueueInput{
		QueueARN: aws.String(arn), QueueAttributes: &types.QueueAttributes{VisibilityTimeoutSeconds: aws.Int32(7)},
	})
	require.NoError(t, err)
	assert.Equal(t, types.QueueStatusUpdating, upd.QueueDescription.QueueStatus)
	assert.Equal(t, int32(7), aws.ToInt32(upd.QueueDescription.QueueAttributes.VisibilityTimeoutSeconds))
	assert.Equal(t, builtIn(6), upd.QueueDescription.QueueAttributes.DeadLetterConfiguration, "omitted: unchanged")
	e.waitStatus(t, arn, types.QueueStatusActive)

	_, err = e.client.DescribeQueue(t.Context(), &kinesis.DescribeQueueInput{QueueARN: aws.String(arn + "0")})
	requireAPIError(t, err, "ResourceNotFoundException")
}

func TestCreateQueueRefuses(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{})
	provisioned := strings.Replace(e.streamARN, e.stream, NewStream(t, 1), 1)
	ts := aws.Time(time.Now())
	for name, c := range map[string]struct {
		edit func(*kinesis.CreateQueueInput)
		code string
	}{
		"provisioned stream": {func(in *kinesis.CreateQueueInput) { in.StreamConfigurationList[0].StreamARN = aws.String(provisioned) }, "InvalidArgumentException"},
		"missing stream": {func(in *kinesis.CreateQueueInput) {
			in.StreamConfigurationList[0].StreamARN = aws.String(e.streamARN + "-x")
		}, "ResourceNotFoundException"},
		"two streams": {func(in *kinesis.CreateQueueInput) {
			in.StreamConfigurationList = append(in.StreamConfigurationList, in.StreamConfigurationList[0])
		}, "ValidationException"},
		"bad name": {func(in *kinesis.CreateQueueInput) { in.QueueName = aws.String("a b") }, "ValidationException"},
		"AT_TIMESTAMP without time": {func(in *kinesis.CreateQueueInput) {
			in.StreamConfigurationList[0].StartingPosition = &types.QueueStartingPosition{Type: types.QueueStartingPositionTypeAtTimestamp}
		}, "ValidationException"},
		"LATEST with time": {func(in *kinesis.CreateQueueInput) {
			in.StreamConfigurationList[0].StartingPosition = &types.QueueStartingPosition{Type: types.QueueStartingPositionTypeLatest, Timestamp: ts}
		}, "ValidationException"},
		"visibility": {func(in *kinesis.CreateQueueInput) {
			in.QueueAttributes = &types.QueueAttributes{VisibilityTimeoutSeconds: aws.Int32(43201)}
		}, "ValidationException"},
		"BUILT_IN without count": {func(in *kinesis.CreateQueueInput) {
			in.QueueAttributes = &types.QueueAttributes{DeadLetterConfiguration: &types.DeadLetterConfiguration{TargetType: types.TargetTypeBuiltIn}}
		}, "ValidationException"},
	} {
		in := e.createInput(UniqueName("q"), queueSpec{})
		c.edit(in)
		_, err := e.client.CreateQueue(t.Context(), in)
		requireAPIError(t, err, c.code)
		assert.Contains(t, fmt.Sprint(err), c.code, name)
	}
	list, err := e.client.ListQueues(t.Context(), &kinesis.ListQueuesInput{})
	require.NoError(t, err)
	assert.Empty(t, list.QueueSummaries, "no refused create may leave a queue")
}

func TestQueueDeliversEachRecordOnce(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{})
	e.put(t, "before-1", "before-2", "before-3")
	fromStart := e.createQueue(t, queueSpec{start: types.QueueStartingPositionTypeTrimHorizon})
	latest := e.createQueue(t, queueSpec{})
	e.put(t, "after-1", "after-2", "after-3")

	drain := func(arn string, n int) map[string]types.QueueRecord {
		got := map[string]types.QueueRecord{}
		testwait.Eventually(t, func() bool {
			for _, r := range e.receive(t, arn, 1, nil) {
				require.NotContains(t, got, string(r.Data), "delivered twice")
				got[string(r.Data)] = r
				out := e.ack(t, arn, aws.ToString(r.ReceiptHandle))
				require.Len(t, out.Successful, 1)
			}
			return len(got) >= n
		}, 10*time.Second, 0, "%d records expected", n)
		assert.Empty(t, e.receive(t, arn, 1, nil), "acknowledged records never come back")
		return got
	}
	all := drain(fromStart, 6)
	assert.Len(t, all, 6)
	for data, r := range all {
		assert.Equal(t, "key-"+data, aws.ToString(r.PartitionKey))
		assert.Equal(t, int32(1), aws.ToInt32(r.ReceiveCount))
		assert.NotEmpty(t, aws.ToString(r.RecordId))
		assert.WithinDuration(t, time.Now(), aws.ToTime(r.ApproximateArrivalTimestamp), time.Minute)
		assert.WithinDuration(t, time.Now(), aws.ToTime(r.FirstReceiveTimestamp), time.Minute)
	}
	later := drain(latest, 3)
	assert.Len(t, later, 3, "LATEST: only what was put after creation")
	for data, r := range later {
		require.Contains(t, all, data)
		assert.Equal(t, aws.ToString(all[data].RecordId), aws.ToString(r.RecordId), "the same id in every queue on the stream")
	}
}

// TestQueueFollowsReshards: records put before a reshard (into shards that then close) and after
// it (into their children) all come out.
func TestQueueFollowsReshards(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{})
	arn := e.createQueue(t, queueSpec{})
	before := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	e.put(t, before...)
	_, err := e.client.UpdateShardCount(t.Context(), &kinesis.UpdateShardCountInput{
		StreamName: aws.String(e.stream), TargetShardCount: aws.Int32(8), ScalingType: types.ScalingTypeUniformScaling,
	})
	require.NoError(t, err)
	testwait.Eventually(t, func() bool {
		out, derr := e.client.DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(e.stream)})
		require.NoError(t, derr)
		return aws.ToInt32(out.StreamDescriptionSummary.OpenShardCount) == 8 &&
			out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive
	}, 5*time.Second, 20*time.Millisecond)
	after := []string{"1", "2", "3", "4", "5", "6", "7", "8"}
	e.put(t, after...)

	got := map[string]bool{}
	testwait.Eventually(t, func() bool {
		for _, r := range e.receive(t, arn, 1, nil) {
			got[string(r.Data)] = true
			e.ack(t, arn, aws.ToString(r.ReceiptHandle))
		}
		return len(got) == len(before)+len(after)
	}, 15*time.Second, 0, "every record, from closed shards and their children")
}

func TestQueueRedeliversAfterVisibilityTimeout(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{})
	arn := e.createQueue(t, queueSpec{visibility: aws.Int32(1)})
	e.put(t, "x")
	first := e.receiveOne(t, arn, nil)
	assert.Equal(t, int32(1), aws.ToInt32(first.ReceiveCount))
	assert.Empty(t, e.receive(t, arn, 0, nil), "in flight: invisible")

	again := e.receiveOne(t, arn, nil) // back after the queue's 1 s
	assert.Equal(t, int32(2), aws.ToInt32(again.ReceiveCount))
	assert.NotEqual(t, aws.ToString(first.ReceiptHandle), aws.ToString(again.ReceiptHandle), "a new handle per receive")
	assert.Equal(t, aws.ToString(first.RecordId), aws.ToString(again.RecordId))
	assert.Equal(t, aws.ToTime(first.FirstReceiveTimestamp), aws.ToTime(again.FirstReceiveTimestamp))

	stale := e.ack(t, arn, aws.ToString(first.ReceiptHandle))
	assert.Empty(t, stale.Successful)
	require.Len(t, stale.Failed, 1)
	assert.Equal(t, "InvalidArgumentException", aws.ToString(stale.Failed[0].ErrorCode))
	assert.Equal(t, aws.ToString(first.ReceiptHandle), aws.ToString(stale.Failed[0].ReceiptHandle))
	assert.Len(t, e.ack(t, arn, aws.ToString(again.ReceiptHandle)).Successful, 1)
	assert.Empty(t, e.receive(t, arn, 2, nil), "acknowledged")
}

func TestQueueRecordsVisibility(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{})
	arn := e.createQueue(t, queueSpec{})
	e.put(t, "x")
	r := e.receiveOne(t, arn, nil) // the queue's 30 s
	assert.Len(t, e.setVisibility(t, arn, aws.ToString(r.ReceiptHandle), 0).Successful, 1)
	r = e.receiveOne(t, arn, aws.Int32(1))
	assert.Equal(t, int32(2), aws.ToInt32(r.ReceiveCount), "visible at once")

	assert.Len(t, e.setVisibility(t, arn, aws.ToString(r.ReceiptHandle), 30).Successful, 1)
	assert.Empty(t, e.receive(t, arn, 2, nil), "extended past the receive's 1 s")
	failed := e.setVisibility(t, arn, "no-such-handle", 0).Failed
	require.Len(t, failed, 1)
	assert.Equal(t, "InvalidArgumentException", aws.ToString(failed[0].ErrorCode))
	_, err := e.client.UpdateQueueRecordsVisibility(t.Context(), &kinesis.UpdateQueueRecordsVisibilityInput{
		QueueARN: aws.String(arn),
		Entries:  []types.UpdateQueueRecordsVisibilityRequestEntry{{ReceiptHandle: r.ReceiptHandle, VisibilityTimeoutSeconds: aws.Int32(43201)}},
	})
	requireAPIError(t, err, "ValidationException")
}

func TestQueueLongPoll(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{})
	arn := e.createQueue(t, queueSpec{})

	began := time.Now()
	assert.Empty(t, e.receive(t, arn, 1, nil))
	waited := time.Since(began)
	assert.GreaterOrEqual(t, waited, time.Second, "empty after WaitTimeSeconds, not before")
	assert.Less(t, waited, 3*time.Second, "empty after WaitTimeSeconds")

	put := make(chan error, 1)
	go func() { // no require here: FailNow must run on the test's goroutine
		time.Sleep(300 * time.Millisecond)
		_, err := e.client.PutRecord(t.Context(), &kinesis.PutRecordInput{
			StreamARN: aws.String(e.streamARN), PartitionKey: aws.String("k"), Data: []byte("mid-wait"),
		})
		put <- err
	}()
	began = time.Now()
	got := e.receive(t, arn, 10, nil)
	require.NoError(t, <-put)
	require.Len(t, got, 1)
	assert.Equal(t, "mid-wait", string(got[0].Data))
	assert.Less(t, time.Since(began), 3*time.Second, "returns as soon as a record is there")
}

func TestQueueReceiveLimit(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{})
	arn := e.createQueue(t, queueSpec{})
	data := make([]string, 25)
	for i := range data {
		data[i] = strconv.Itoa(i)
	}
	e.put(t, data...)
	testwait.Eventually(t, func() bool { return e.server.held(arn) == len(data) }, 5*time.Second, 20*time.Millisecond)

	out, err := e.client.ReceiveQueueRecords(t.Context(), &kinesis.ReceiveQueueRecordsInput{QueueARN: aws.String(arn), Limit: aws.Int32(3)})
	require.NoError(t, err)
	assert.Len(t, out.QueueRecords, 3)
	assert.Len(t, e.receive(t, arn, 0, nil), 10, "the default and maximum")
	for _, bad := range []*kinesis.ReceiveQueueRecordsInput{{Limit: aws.Int32(11)}, {Limit: aws.Int32(0)}, {WaitTimeSeconds: aws.Int32(21)}} {
		bad.QueueARN = aws.String(arn)
		_, err := e.client.ReceiveQueueRecords(t.Context(), bad)
		requireAPIError(t, err, "ValidationException")
	}
}

func TestQueueDeadLetters(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{})
	arn := e.createQueue(t, queueSpec{deadLetter: builtIn(2)})
	e.put(t, "poison")
	// Visibility 0: each delivery ends at once, unacknowledged.
	assert.Equal(t, int32(1), aws.ToInt32(e.receiveOne(t, arn, aws.Int32(0)).ReceiveCount))
	assert.Equal(t, int32(2), aws.ToInt32(e.receiveOne(t, arn, aws.Int32(0)).ReceiveCount))
	assert.Empty(t, e.receive(t, arn, 1, nil), "dead letter after MaxReceiveCount receives")

	dead := e.receiveDead(t, arn, 1)
	require.Len(t, dead, 1)
	assert.Equal(t, "poison", string(dead[0].Data))
	assert.Equal(t, "key-poison", aws.ToString(dead[0].PartitionKey))
	assert.Equal(t, int32(3), aws.ToInt32(dead[0].ReceiveCount), "dead-letter receives count on")
	assert.Empty(t, e.receiveDead(t, arn, 0), "in flight on the dead-letter side too")
	assert.Len(t, e.ack(t, arn, aws.ToString(dead[0].ReceiptHandle)).Failed, 1, "only the DeadLetter operations take its handle")

	restored, err := e.client.RestoreDeadLetterQueueRecords(t.Context(), &kinesis.RestoreDeadLetterQueueRecordsInput{
		QueueARN: aws.String(arn), Entries: []types.RestoreDeadLetterQueueRecordsRequestEntry{{ReceiptHandle: dead[0].ReceiptHandle}},
	})
	require.NoError(t, err)
	assert.Len(t, restored.Successful, 1)
	r := e.receiveOne(t, arn, aws.Int32(0))
	assert.Equal(t, int32(1), aws.ToInt32(r.ReceiveCount), "restore resets the count")
	assert.Equal(t, aws.ToString(dead[0].RecordId), aws.ToString(r.RecordId))

	e.receiveOne(t, arn, aws.Int32(0))
	dead = e.receiveDead(t, arn, 1)
	require.Len(t, dead, 1, "dead again after MaxReceiveCount more")
	acked, err := e.client.AcknowledgeDeadLetterQueueRecords(t.Context(), &kinesis.AcknowledgeDeadLetterQueueRecordsInput{
		QueueARN: aws.String(arn), Entries: []types.AcknowledgeDeadLetterQueueRecordsRequestEntry{{ReceiptHandle: dead[0].ReceiptHandle}},
	})
	require.NoError(t, err)
	assert.Len(t, acked.Successful, 1)
	assert.Empty(t, e.receiveDead(t, arn, 1), "discarded")
	assert.Empty(t, e.receive(t, arn, 0, nil), "discarded")
}

func TestQueueWithoutDeadLetters(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{})
	arn := e.createQueue(t, queueSpec{deadLetter: &types.DeadLetterConfiguration{TargetType: types.TargetTypeNone}})
	e.put(t, "x")
	for i := range int32(8) {
		assert.Equal(t, i+1, aws.ToInt32(e.receiveOne(t, arn, aws.Int32(0)).ReceiveCount))
	}
	assert.Empty(t, e.receiveDead(t, arn, 0))
}

func TestListQueues(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{})
	other := e
	other.stream, other.streamARN = onDemandStream(t, e.client)
	mine := make([]string, 0, 3)
	for range 3 {
		mine = append(mine, e.createQueue(t, queueSpec{}))
	}
	theirs := other.createQueue(t, queueSpec{})

	list := func(stream string, limit int32, token *string) *kinesis.ListQueuesOutput {
		in := &kinesis.ListQueuesInput{MaxResults: aws.Int32(limit), NextToken: token}
		if stream != "" {
			in.StreamFilter = []types.QueueStreamFilter{{StreamARN: aws.String(stream)}}
		}
		out, err := e.client.ListQueues(t.Context(), in)
		require.NoError(t, err)
		return out
	}
	arns := func(out *kinesis.ListQueuesOutput) (got []string) {
		for _, s := range out.QueueSummaries {
			got = append(got, aws.ToString(s.QueueARN))
		}
		return got
	}
	first := list(e.streamARN, 2, nil)
	require.Len(t, first.QueueSummaries, 2)
	require.NotNil(t, first.NextToken)
	assert.Equal(t, e.streamARN, aws.ToString(first.QueueSummaries[0].Streams[0].StreamARN))
	second := list(e.streamARN, 2, first.NextToken)
	assert.Nil(t, second.NextToken)
	assert.ElementsMatch(t, mine, append(arns(first), arns(second)...))
	assert.Equal(t, []string{theirs}, arns(list(other.streamARN, 10, nil)))
	assert.Len(t, list("", 10, nil).QueueSummaries, 4)

	_, err := e.client.ListQueues(t.Context(), &kinesis.ListQueuesInput{MaxResults: aws.Int32(0)})
	requireAPIError(t, err, "ValidationException")
}

func TestDeleteQueue(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{DeletionDelay: 300 * time.Millisecond})
	arn := e.createQueue(t, queueSpec{})
	e.put(t, "x")
	r := e.receiveOne(t, arn, nil)
	polling := make(chan error, 1)
	go func() {
		_, err := e.client.ReceiveQueueRecords(t.Context(), &kinesis.ReceiveQueueRecordsInput{QueueARN: aws.String(arn), WaitTimeSeconds: aws.Int32(20)})
		polling <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the poll start waiting

	_, err := e.client.DeleteQueue(t.Context(), &kinesis.DeleteQueueInput{QueueARN: aws.String(arn)})
	require.NoError(t, err)
	select {
	case perr := <-polling:
		requireAPIError(t, perr, "ResourceInUseException")
	case <-time.After(2 * time.Second):
		t.Fatal("a long poll should end when its queue is deleted")
	}
	assert.Equal(t, types.QueueStatusDeleting, e.describe(t, arn).QueueStatus)
	out := e.ack(t, arn, aws.ToString(r.ReceiptHandle))
	require.Len(t, out.Failed, 1, "in-flight handles die")
	assert.Equal(t, "ResourceNotFoundException", aws.ToString(out.Failed[0].ErrorCode))

	testwait.Eventually(t, func() bool {
		_, derr := e.client.DescribeQueue(t.Context(), &kinesis.DescribeQueueInput{QueueARN: aws.String(arn)})
		return derr != nil && strings.Contains(derr.Error(), "ResourceNotFoundException")
	}, 5*time.Second, 20*time.Millisecond, "the queue should be gone")
	_, err = e.client.DeleteQueue(t.Context(), &kinesis.DeleteQueueInput{QueueARN: aws.String(arn)})
	requireAPIError(t, err, "ResourceNotFoundException")
	testwait.Eventually(t, func() bool { return e.server.readersRunning() == 0 }, 5*time.Second, 10*time.Millisecond,
		"the reader should stop")
}

func TestQueueServerCloseEndsLongPoll(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{})
	arn := e.createQueue(t, queueSpec{})
	polling := make(chan error, 1)
	go func() {
		_, err := e.client.ReceiveQueueRecords(t.Context(), &kinesis.ReceiveQueueRecordsInput{QueueARN: aws.String(arn), WaitTimeSeconds: aws.Int32(20)})
		polling <- err
	}()
	time.Sleep(200 * time.Millisecond)
	began := time.Now()
	e.server.Close()
	assert.Less(t, time.Since(began), 2*time.Second, "Close waits for the poll, which must end at once")
	select {
	case <-polling:
	case <-time.After(2 * time.Second):
		t.Fatal("the long poll should end with Close")
	}
	assert.Zero(t, e.server.readersRunning())
}

// TestQueueOverAutoDistribution chains the queue server to an AutoDistribution proxy: records put
// without a key come out of the queue without one.
func TestQueueOverAutoDistribution(t *testing.T) {
	t.Parallel()
	s := Get(t)
	auto := NewAutoDistribution(t, s.KinesisEndpoint)
	qs := NewQueueServer(t, auto.URL())
	e := queueEnv{server: qs, client: kinesisClient(s.AWSConfig(), qs.URL())}
	e.stream, e.streamARN = onDemandStream(t, e.client)
	auto.SetStrategy(e.streamARN, true)
	arn := e.createQueue(t, queueSpec{})
	_, err := e.client.PutRecord(t.Context(), &kinesis.PutRecordInput{StreamARN: aws.String(e.streamARN), Data: []byte("keyless")})
	require.NoError(t, err)
	r := e.receiveOne(t, arn, nil)
	assert.Equal(t, "keyless", string(r.Data))
	assert.Nil(t, r.PartitionKey)
}

// TestQueueWireFormat checks raw answers where the SDK would hide a difference: empty lists are
// [] (the SDK reads null as an empty list too) and errors are typed as kinesis-local types them.
func TestQueueWireFormat(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t, QueueOptions{})
	arn := e.createQueue(t, queueSpec{})
	post := func(op, body string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.server.URL(), strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", jsonContentType)
		req.Header.Set("X-Amz-Target", targetPrefix+op)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		assert.Contains(t, resp.Header.Get("Content-Type"), "x-amz-json-1.1")
		return resp.StatusCode, string(b)
	}
	status, body := post("ReceiveQueueRecords", `{"QueueARN":"`+arn+`","WaitTimeSeconds":0}`)
	assert.Equal(t, http.StatusOK, status)
	assert.JSONEq(t, `{"QueueRecords":[]}`, body)
	status, body = post("AcknowledgeQueueRecords", `{"QueueARN":"`+arn+`","Entries":[{"ReceiptHandle":"h"}]}`)
	assert.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, `"Successful":[]`)
	assert.Contains(t, body, `"Failed":[{"ReceiptHandle":"h","ErrorCode":"InvalidArgumentException"`)
	status, body = post("DescribeQueue", `{"QueueARN":"`+arn+`x"}`)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Regexp(t, `^\{"__type":"ResourceNotFoundException","message":"[^"]+"\}$`, body)
	status, body = post("DeleteQueue", `{"QueueARN":"`+arn+`"}`)
	assert.Equal(t, http.StatusOK, status)
	assert.JSONEq(t, `{}`, body)
}
