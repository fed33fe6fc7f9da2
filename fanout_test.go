package kinesis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go/eventstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

func encodeFrame(t testing.TB, headers map[string]string, payload []byte) []byte {
	t.Helper()
	var msg eventstream.Message
	for _, name := range []string{":message-type", ":event-type", ":exception-type", ":error-code", ":error-message", ":content-type"} {
		if v, ok := headers[name]; ok {
			msg.Headers = append(msg.Headers, eventstream.Header{Name: name, Value: eventstream.StringValue(v)})
		}
	}
	// Headers of the other types must be skipped over correctly.
	msg.Headers = append(msg.Headers,
		eventstream.Header{Name: "x-bool", Value: eventstream.BoolValue(true)},
		eventstream.Header{Name: "x-int64", Value: eventstream.Int64Value(7)},
		eventstream.Header{Name: "x-bytes", Value: eventstream.BytesValue([]byte{1, 2, 3})},
		eventstream.Header{Name: "x-time", Value: eventstream.TimestampValue(time.Unix(1, 0))},
	)
	msg.Payload = payload
	var buf bytes.Buffer
	require.NoError(t, eventstream.NewEncoder().Encode(&buf, msg))
	return buf.Bytes()
}

// chunkReader returns at most n bytes per Read, as a network connection may.
type chunkReader struct {
	data []byte
	n    int
	err  error // returned once data is exhausted; io.EOF if nil
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.data)
	r.data = r.data[n:]
	return n, nil
}

func (r *chunkReader) Close() error { return nil }

func TestFanOutFramesAreReadWholeInAnyChunking(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("r"), 70<<10)
	frames := [][]byte{
		encodeFrame(t, map[string]string{":message-type": "event", ":event-type": "initial-response"}, []byte("{}")),
		encodeFrame(t, map[string]string{":message-type": "event", ":event-type": subscribeToShardEvent}, big),
		encodeFrame(t, map[string]string{":message-type": "event", ":event-type": subscribeToShardEvent}, nil),
		encodeFrame(t, map[string]string{":message-type": "exception", ":exception-type": "ResourceInUseException"},
			[]byte(`{"message":"Another active subscription exists"}`)),
		encodeFrame(t, map[string]string{":message-type": "exception", ":exception-type": "InternalFailureException"}, []byte("not json")),
		encodeFrame(t, map[string]string{":message-type": "error", ":error-code": "InternalError", ":error-message": "boom"}, nil),
	}
	stream := bytes.Join(frames, nil)

	for _, chunk := range []int{1, 3, 12, 13, 4096, len(stream)} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			r := &chunkReader{data: stream, n: chunk}
			var got []streamFrame
			var buf []byte
			for i := range frames {
				frame, err := readFrame(r, buf)
				require.NoError(t, err)
				require.Equal(t, frames[i], frame, "frame %d is passed on unchanged", i)
				got = append(got, parseFrame(bytes.Clone(frame))) // buf is reused for the next frame
				buf = frame
			}
			_, err := readFrame(r, buf)
			require.ErrorIs(t, err, io.EOF, "a clean end between frames")

			assert.Equal(t, "initial-response", got[0].eventType)
			assert.Equal(t, subscribeToShardEvent, got[1].eventType)
			require.NoError(t, got[1].failure())
			assert.Equal(t, big, got[1].payload)
			require.EqualError(t, got[3].failure(), "ResourceInUseException: Another active subscription exists")
			require.EqualError(t, got[4].failure(), "InternalFailureException", "a payload that is not JSON leaves the type")
			require.EqualError(t, got[5].failure(), "InternalError: boom")
		})
	}
}

func TestFanOutFramesCutOrMalformed(t *testing.T) {
	t.Parallel()
	frame := encodeFrame(t, map[string]string{":message-type": "event", ":event-type": subscribeToShardEvent}, []byte("payload"))

	_, err := readFrame(&chunkReader{data: frame[:len(frame)-3], n: 5}, nil)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF, "a stream cut inside a frame")

	reset := errors.New("connection reset by peer")
	_, err = readFrame(&chunkReader{data: frame[:20], n: 5, err: reset}, nil)
	require.ErrorIs(t, err, reset)

	_, err = readFrame(strings.NewReader("HTTP/1.1 200 OK\r\nthis is not an event stream"), nil)
	require.ErrorIs(t, err, errNotEventStream)
}

func FuzzFanOutFrames(f *testing.F) {
	f.Add(encodeFrame(f, map[string]string{":message-type": "exception", ":exception-type": "X"}, []byte(`{"message":"m"}`)))
	f.Fuzz(func(_ *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var buf []byte
		for {
			frame, err := readFrame(r, buf)
			if err != nil {
				return
			}
			pf := parseFrame(frame)
			_ = pf.failure()
			buf = frame
		}
	})
}

// fanOutFixture is a stream on kinesis-local with a registered consumer, and a Kinesis client with
// the guard installed, as KCL would use it.
type fanOutFixture struct {
	stream, consumerARN string
	fix                 *fanoutFixClient
	client              *kinesis.Client
	guard               *subscribeGuard
	stop                context.CancelFunc
	logs                *syncBuffer
}

func newFanOutFixture(t *testing.T, shards int32) *fanOutFixture {
	t.Helper()
	f := &fanOutFixture{stream: localaws.NewStream(t, shards), fix: newFanoutFixClient()}
	log, logs := capturedLogger(t)
	f.logs = logs
	lifetime, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	f.stop = stop
	f.guard = newSubscribeGuard(lifetime, log, 4*time.Second)
	f.client = localaws.Get(t).KinesisClient(func(o *kinesis.Options) { o.HTTPClient = f.fix }, f.guard.kinesisOption)
	m := &kinesisMetadata{StreamName: f.stream, ConsumerName: "guard"}
	arn, err := ensureConsumer(t.Context(), f.client, m, log)
	require.NoError(t, err)
	f.consumerARN = arn
	return f
}

func (f *fanOutFixture) subscribe(t *testing.T, start *types.StartingPosition) (*kinesis.SubscribeToShardEventStream, error) {
	out, err := f.client.SubscribeToShard(context.TODO(), &kinesis.SubscribeToShardInput{ // as KCL does
		ConsumerARN: aws.String(f.consumerARN), ShardId: aws.String("shardId-000000000000"), StartingPosition: start,
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = out.GetStream().Close() })
	return out.GetStream(), nil
}

func (f *fanOutFixture) put(t *testing.T, data ...string) {
	for _, d := range data {
		_, err := f.client.PutRecord(t.Context(), &kinesis.PutRecordInput{StreamName: aws.String(f.stream), Data: []byte(d), PartitionKey: aws.String("k")})
		require.NoError(t, err)
	}
}

// nextEvent returns the stream's next event, or false when the stream ended.
func nextEvent(t *testing.T, es *kinesis.SubscribeToShardEventStream) (types.SubscribeToShardEvent, bool) {
	t.Helper()
	select {
	case ev, ok := <-es.Events():
		if !ok {
			return types.SubscribeToShardEvent{}, false
		}
		return ev.(*types.SubscribeToShardEventStreamMemberSubscribeToShardEvent).Value, true
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
		return types.SubscribeToShardEvent{}, false
	}
}

var latest = &types.StartingPosition{Type: types.ShardIteratorTypeLatest}

func TestFanOutGuardEndsAnOpenSubscriptionWhenTheConsumerStops(t *testing.T) {
	t.Parallel()
	f := newFanOutFixture(t, 1)
	es, err := f.subscribe(t, latest)
	require.NoError(t, err)
	_, ok := nextEvent(t, es)
	require.True(t, ok)

	f.stop()
	stopped := time.Now()
	for {
		if _, ok := nextEvent(t, es); !ok {
			break
		}
	}
	assert.Less(t, time.Since(stopped), 900*time.Millisecond, "kinesis-local sends an event a second: the stop ended the stream, not the server")
	require.NoError(t, es.Err(), "KCL is shown a plain end of stream")

	began := time.Now()
	_, err = f.subscribe(t, latest)
	require.ErrorIs(t, err, errConsumerStopping)
	assert.Less(t, time.Since(began), 900*time.Millisecond, "no new subscription, and no wait for one")
	assert.Zero(t, strings.Count(f.logs.String(), "Subscription to the shard failed"), "a stop is no failure")
}

func TestFanOutGuardBacksOffWhileSubscriptionsFailAndLogsTheEpisodeOnce(t *testing.T) {
	t.Parallel()
	f := newFanOutFixture(t, 1)
	es, err := f.subscribe(t, latest)
	require.NoError(t, err)
	_, ok := nextEvent(t, es)
	require.True(t, ok)

	// A broken connection: kinesis-local takes 1-3 s to notice, and until then answers every new
	// subscription with ResourceInUseException inside the event stream (as KCL would not notice).
	require.Equal(t, 1, f.fix.dropSubscriptions())
	for {
		if _, ok := nextEvent(t, es); !ok {
			break
		}
	}
	var (
		calls  []time.Time
		events int
	)
	for events == 0 {
		calls = append(calls, time.Now())
		es, err := f.subscribe(t, latest)
		require.NoError(t, err)
		for {
			if _, ok := nextEvent(t, es); !ok {
				break
			}
			events++
			_ = es.Close()
		}
	}
	t.Logf("subscribed %d times until the subscription delivered again", len(calls))
	for i := 1; i < len(calls); i++ {
		gap := calls[i].Sub(calls[i-1])
		want := time.Duration(1<<(i-1)) * subscribeRetryFirst / 2 // the jittered backoff's lower bound
		assert.GreaterOrEqual(t, gap, want-50*time.Millisecond, "call %d came %v after the one before", i, gap)
	}
	assert.Equal(t, 1, strings.Count(f.logs.String(), "Subscription to the shard failed;"), "one warning per episode")
	assert.Equal(t, 1, strings.Count(f.logs.String(), "recovered after"), "and one line when it ends")
}

func TestFanOutGuardTellsFailuresOnlyAnOperatorCanEnd(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("operation error Kinesis: SubscribeToShard: %w", err) }
	for err, want := range map[error]bool{
		wrap(&types.ResourceNotFoundException{}):      true, // consumer deregistered, stream deleted
		wrap(&types.AccessDeniedException{}):          true,
		wrap(&types.KMSAccessDeniedException{}):       true,
		wrap(&types.ResourceInUseException{}):         false, // another subscriber, for a few seconds
		wrap(&types.LimitExceededException{}):         false,
		errors.New("connection lost: unexpected EOF"): false,
	} {
		assert.Equal(t, want, needsOperator(err), "%v", err)
	}
}
