package kinesis

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/testlog"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
	"github.com/dapr/components-contrib/bindings"
)

// queueTarget is an on-demand stream and the test bed's queue server in front of kinesis-local.
type queueTarget struct {
	stream string
	server *localaws.QueueServer
	client *kinesis.Client // through the queue server: the queue calls, and the stream's
	direct *kinesis.Client // kinesis-local itself
}

func newQueueTarget(t *testing.T) queueTarget {
	t.Helper()
	srv := localaws.Get(t)
	tg := queueTarget{stream: localaws.NewOnDemandStream(t), server: localaws.NewQueueServer(t, srv.KinesisEndpoint), direct: srv.KinesisClient()}
	tg.client = srv.KinesisClient(func(o *kinesis.Options) { o.BaseEndpoint = aws.String(tg.server.URL()) })
	return tg
}

// props is a queue mode component on the target; kv overrides.
func (tg queueTarget) props(t *testing.T, kv ...string) map[string]string {
	t.Helper()
	p := localProps(t, tg.stream)
	p["endpoint"] = tg.server.URL()
	p["mode"] = "queue"
	p["consumerName"] = localaws.UniqueName("queue")
	p["initialPosition"] = "TRIM_HORIZON"
	p["retryInitialInterval"], p["retryMaxInterval"] = "100ms", "1s"
	for i := 0; i+1 < len(kv); i += 2 {
		p[kv[i]] = kv[i+1]
	}
	return p
}

func (tg queueTarget) put(t *testing.T, prefix string, n int) []string {
	t.Helper()
	sent := make([]string, 0, n)
	entries := make([]types.PutRecordsRequestEntry, 0, n)
	for i := range n {
		data := fmt.Sprintf("%s-%04d", prefix, i)
		sent = append(sent, data)
		entries = append(entries, types.PutRecordsRequestEntry{Data: []byte(data), PartitionKey: aws.String("k" + strconv.Itoa(i%7))})
	}
	out, err := tg.direct.PutRecords(t.Context(), &kinesis.PutRecordsInput{StreamName: aws.String(tg.stream), Records: entries})
	require.NoError(t, err)
	require.Zero(t, aws.ToInt32(out.FailedRecordCount))
	return sent
}

// queueRecorder is a handler that records each call; fail decides its outcome.
type queueRecorder struct {
	hold time.Duration
	fail func(data string, call int) error

	mu        sync.Mutex
	calls     map[string]int
	succeeded map[string]int
	metadata  map[string]map[string]string
	byReplica map[string]int
}

func newQueueRecorder() *queueRecorder {
	return &queueRecorder{calls: map[string]int{}, succeeded: map[string]int{}, metadata: map[string]map[string]string{}, byReplica: map[string]int{}}
}

func (r *queueRecorder) handler(replica string) bindings.Handler {
	return func(ctx context.Context, resp *bindings.ReadResponse) ([]byte, error) {
		data := string(resp.Data)
		r.mu.Lock()
		r.calls[data]++
		call := r.calls[data]
		r.metadata[data] = resp.Metadata
		r.mu.Unlock()
		select {
		case <-time.After(r.hold):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if r.fail != nil {
			if err := r.fail(data, call); err != nil {
				return nil, err
			}
		}
		r.mu.Lock()
		r.succeeded[data]++
		r.byReplica[replica]++
		r.mu.Unlock()
		return nil, nil
	}
}

func (r *queueRecorder) allSucceeded(want []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range want {
		if r.succeeded[w] == 0 {
			return false
		}
	}
	return true
}

func (r *queueRecorder) callsOf(data string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[data]
}

func startQueueBinding(t *testing.T, props map[string]string, handler bindings.Handler, configure ...func(*AWSKinesis)) *AWSKinesis {
	t.Helper()
	b := newBinding(t, props, configure...)
	require.NoError(t, b.Read(t.Context(), handler))
	return b
}

func TestQueueModeDeliversEveryRecordThroughFailuresWithItsMetadata(t *testing.T) {
	t.Parallel()
	tg := newQueueTarget(t)
	sent := tg.put(t, "q", 60)
	rec := newQueueRecorder()
	rec.fail = func(data string, call int) error {
		if n, _ := strconv.Atoi(data[len(data)-4:]); n%5 == 0 && call == 1 {
			return errors.New("app unavailable")
		}
		return nil
	}
	faults := newFaultClient(nil)
	startQueueBinding(t, tg.props(t, "queueConcurrency", "8"), rec.handler("a"), func(b *AWSKinesis) { b.sdkHTTPClient = faults })
	testwait.Eventually(t, func() bool { return rec.allSucceeded(sent) }, 60*time.Second, 20*time.Millisecond, "every record succeeds")

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, data := range sent {
		assert.Equal(t, 1, rec.succeeded[data], data)
	}
	md := rec.metadata["q-0005"]
	assert.Equal(t, "2", md[queueMetaReceiveCount], "a failed record comes back with its receive count")
	assert.Equal(t, "k5", md[readPartitionKey])
	assert.NotEmpty(t, md[queueMetaRecordID])
	assert.Contains(t, md[queueMetaQueueARN], ":queue/")
	assert.Equal(t, tg.stream, md[readStreamName])
	assert.NotEmpty(t, md[readArrivalTimestamp])
	assert.NotEmpty(t, md[queueMetaFirstReceiveTimestamp])
	for _, op := range []string{"CreateTable", "DescribeTable", "Scan", "UpdateItem", "GetItem", "PutItem"} {
		assert.Zero(t, faults.count(op), "no DynamoDB call in queue mode: %s", op)
	}
}

func TestQueueModeHandlerSlowerThanTheVisibilityTimeoutIsCalledOnce(t *testing.T) {
	t.Parallel()
	tg := newQueueTarget(t)
	sent := tg.put(t, "slow", 3)
	rec := newQueueRecorder()
	rec.hold = 2500 * time.Millisecond // past twice the visibility timeout
	startQueueBinding(t, tg.props(t, "queueVisibilityTimeout", "1s"), rec.handler("a"))
	testwait.Eventually(t, func() bool { return rec.allSucceeded(sent) }, 30*time.Second, 20*time.Millisecond)
	for _, data := range sent {
		assert.Equal(t, 1, rec.callsOf(data), "%s: its visibility was kept while the call ran", data)
	}
}

func TestQueueModeCloseHandsRecordsBackAtOnce(t *testing.T) {
	t.Parallel()
	tg := newQueueTarget(t)
	sent := tg.put(t, "back", 6)
	// A failed record would come back after 5 minutes, and one just left after an hour.
	props := tg.props(t, "queueVisibilityTimeout", "1h", "queueConcurrency", "10", "retryInitialInterval", "5m", "retryMaxInterval", "10m")
	stuck := newQueueRecorder()
	stuck.hold = time.Hour // never finishes: Close's grace ends it
	first := startQueueBinding(t, props, stuck.handler("first"))
	testwait.Eventually(t, func() bool {
		stuck.mu.Lock()
		defer stuck.mu.Unlock()
		return len(stuck.calls) == len(sent)
	}, 30*time.Second, 20*time.Millisecond, "the first replica holds every record")

	began := time.Now()
	require.NoError(t, first.Close())
	assert.Less(t, time.Since(began), 5500*time.Millisecond, "Close within its bound")
	rec := newQueueRecorder()
	startQueueBinding(t, props, rec.handler("second"))
	testwait.Eventually(t, func() bool { return rec.allSucceeded(sent) }, 30*time.Second, 20*time.Millisecond,
		"handed back at once, not after the hour of visibility")
}

func TestQueueModeDeadLettersAfterMaxDeliveryAttemptsAndTheRestFlows(t *testing.T) {
	t.Parallel()
	tg := newQueueTarget(t)
	sent := tg.put(t, "dl", 20)
	rec := newQueueRecorder()
	rec.fail = func(data string, _ int) error {
		if data == "dl-0007" {
			return errors.New("poison")
		}
		return nil
	}
	b := startQueueBinding(t, tg.props(t, "maxDeliveryAttempts", "2"), rec.handler("a"))
	others := without(sent, "dl-0007")
	testwait.Eventually(t, func() bool { return rec.allSucceeded(others) }, 30*time.Second, 20*time.Millisecond)

	arn := rec.metadata["dl-0000"][queueMetaQueueARN]
	var letters []types.QueueRecord
	testwait.Eventually(t, func() bool {
		out, err := tg.client.ReceiveDeadLetterQueueRecords(t.Context(), &kinesis.ReceiveDeadLetterQueueRecordsInput{
			QueueARN: aws.String(arn), WaitTimeSeconds: aws.Int32(1),
		})
		require.NoError(t, err)
		letters = append(letters, out.QueueRecords...)
		return len(letters) > 0
	}, 30*time.Second, 100*time.Millisecond, "the poison record is in the queue's dead-letter state")
	assert.Equal(t, "dl-0007", string(letters[0].Data))
	assert.Equal(t, 2, rec.callsOf("dl-0007"), "maxDeliveryAttempts deliveries, no more")
	require.NoError(t, b.Close())
}

func TestQueueModeReplicasStartedTogetherShareOneQueue(t *testing.T) {
	t.Parallel()
	tg := newQueueTarget(t)
	props := tg.props(t)
	rec := newQueueRecorder()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { startQueueBinding(t, props, rec.handler("r"+strconv.Itoa(i))) })
	}
	wg.Wait()
	sent := tg.put(t, "three", 30)
	testwait.Eventually(t, func() bool { return rec.allSucceeded(sent) }, 30*time.Second, 20*time.Millisecond)

	out, err := tg.client.ListQueues(t.Context(), &kinesis.ListQueuesInput{})
	require.NoError(t, err)
	var named []string
	for _, q := range out.QueueSummaries {
		if aws.ToString(q.QueueName) == props["consumerName"] {
			named = append(named, aws.ToString(q.QueueARN))
		}
	}
	assert.Len(t, named, 1, "one queue for the three")
	for _, data := range sent {
		assert.Equal(t, 1, rec.succeeded[data], data)
	}
}

// createQueue creates a queue on stream (TRIM_HORIZON, a 30 s visibility timeout, dead letters
// after 3 receives), as an operator would, and returns its ARN.
func createQueue(t *testing.T, client *kinesis.Client, stream, name string) string {
	t.Helper()
	sum, err := client.DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
	require.NoError(t, err)
	out, err := client.CreateQueue(t.Context(), &kinesis.CreateQueueInput{
		QueueName: aws.String(name),
		StreamConfigurationList: []types.QueueStreamConfiguration{{
			StreamARN: sum.StreamDescriptionSummary.StreamARN, StartingPosition: &types.QueueStartingPosition{Type: types.QueueStartingPositionTypeTrimHorizon},
		}},
		QueueAttributes: &types.QueueAttributes{
			VisibilityTimeoutSeconds: aws.Int32(30),
			DeadLetterConfiguration:  &types.DeadLetterConfiguration{TargetType: types.TargetTypeBuiltIn, MaxReceiveCount: aws.Int32(3)},
		},
	})
	require.NoError(t, err)
	return aws.ToString(out.QueueDescription.QueueARN)
}

func TestQueueModeReadsTheQueueOfQueueARNAndSaysWhatItRules(t *testing.T) {
	t.Parallel()
	tg := newQueueTarget(t)
	name := localaws.UniqueName("ops")
	arn := createQueue(t, tg.client, tg.stream, name)
	sent := tg.put(t, "arn", 10)
	log, logs := testlog.New(t)
	rec := newQueueRecorder()
	// The metadata asks for other settings; the queue's own rule, and the log says which.
	props := tg.props(t, "queueARN", arn, "queueVisibilityTimeout", "5m", "maxDeliveryAttempts", "9")
	startQueueBinding(t, props, rec.handler("a"), func(b *AWSKinesis) { b.logger = log })
	testwait.Eventually(t, func() bool { return rec.allSucceeded(sent) }, 30*time.Second, 20*time.Millisecond)
	assert.Equal(t, 1, logs.Count("Reading existing queue "+arn+": visibility timeout 30s, dead-letter state after 3 unacknowledged receives"), logs.String())

	out, err := tg.client.ListQueues(t.Context(), &kinesis.ListQueuesInput{})
	require.NoError(t, err)
	for _, q := range out.QueueSummaries {
		assert.NotEqual(t, props["consumerName"], aws.ToString(q.QueueName), "nothing created with queueARN")
	}
}

func TestQueueModeRefusesWhatItCannotRead(t *testing.T) {
	t.Parallel()
	tg := newQueueTarget(t)

	t.Run("a name taken by another stream's queue", func(t *testing.T) {
		other := localaws.NewOnDemandStream(t)
		props := tg.props(t)
		otherProps := tg.props(t, "streamName", other, "consumerName", props["consumerName"])
		startQueueBinding(t, otherProps, newQueueRecorder().handler("other"))
		b := newBinding(t, props)
		err := b.Read(t.Context(), newQueueRecorder().handler("a"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "'queueName' \""+props["consumerName"]+"\" is taken by a queue of another stream")
	})

	t.Run("a provisioned stream", func(t *testing.T) {
		props := tg.props(t, "streamName", localaws.NewStream(t, 1))
		err := newBinding(t, props).Read(t.Context(), newQueueRecorder().handler("a"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "mode queue needs an on-demand stream")
	})

	t.Run("receiving denied, then allowed", func(t *testing.T) {
		var denied atomic.Bool
		denied.Store(true)
		faults := newFaultClient(func(op string, _ int, req *http.Request) *http.Response {
			if op == "ReceiveQueueRecords" && denied.Load() {
				return awsErrorResponse(req, http.StatusBadRequest, "AccessDeniedException", "not authorized to perform: kinesis:ReceiveQueueRecords")
			}
			return nil
		})
		log, logs := testlog.New(t)
		rec := newQueueRecorder()
		b := newBinding(t, tg.props(t), func(b *AWSKinesis) { b.sdkHTTPClient, b.logger = faults, log })
		require.NoError(t, b.Read(t.Context(), rec.handler("a")), "Read starts; receiving is retried")
		testwait.Eventually(t, func() bool { return faults.count("ReceiveQueueRecords") >= 3 }, 10*time.Second, 20*time.Millisecond)
		sent := tg.put(t, "allowed", 5)
		denied.Store(false) // the policy was fixed: no restart needed
		testwait.Eventually(t, func() bool { return rec.allSucceeded(sent) }, 30*time.Second, 20*time.Millisecond)
		require.NoError(t, b.Close())
		assert.Equal(t, 1, logs.Count("level=error"), logs.String())
		assert.Equal(t, 1, logs.Count("(kinesis:ReceiveQueueRecords)"), "the permission is named once: %s", logs.String())
		assert.Equal(t, 1, logs.Count("Receiving from the queue works again"), logs.String())
	})

	t.Run("queueARN of another stream's queue", func(t *testing.T) {
		other := localaws.NewOnDemandStream(t)
		arn := createQueue(t, tg.client, other, localaws.UniqueName("other"))
		err := newBinding(t, tg.props(t, "queueARN", arn)).Read(t.Context(), newQueueRecorder().handler("a"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "'queueARN' "+arn+" reads another stream than")
	})
}
