package kinesis

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/position"
	"github.com/dapr-kinesis/kinesis/internal/testlog"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
	"github.com/dapr/components-contrib/bindings"
)

// refusing is a handler that fails every call for the records in poison and accepts the others,
// after hold; it notes when each call started and ended.
type refusing struct {
	hold   time.Duration
	poison map[string]bool
	// onFail, if set, runs before a poison record's call returns its error (attempt from 1).
	onFail func(data string, attempt int)

	mu    sync.Mutex
	calls []refusedCall
}

type refusedCall struct {
	data       string
	start, end time.Time
	ok         bool
}

func newRefusing(hold time.Duration, poison ...string) *refusing {
	r := &refusing{hold: hold, poison: map[string]bool{}}
	for _, p := range poison {
		r.poison[p] = true
	}
	return r
}

func (r *refusing) handle(_ context.Context, resp *bindings.ReadResponse) ([]byte, error) {
	data := string(resp.Data)
	start := time.Now()
	time.Sleep(r.hold)
	r.mu.Lock()
	attempt := 1
	for _, c := range r.calls {
		if c.data == data {
			attempt++
		}
	}
	r.mu.Unlock()
	var err error
	if r.poison[data] {
		if r.onFail != nil {
			r.onFail(data, attempt)
		}
		err = errors.New("app refuses " + data)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, refusedCall{data: data, start: start, end: time.Now(), ok: err == nil})
	return nil, err
}

func (r *refusing) succeeded() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.calls {
		if c.ok {
			out = append(out, c.data)
		}
	}
	return out
}

func (r *refusing) callsOf(data string) []refusedCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []refusedCall
	for _, c := range r.calls {
		if c.data == data {
			out = append(out, c)
		}
	}
	return out
}

// deadLetter is one record of a dead-letter stream: its JSON fields as a user's tool sees them.
type deadLetter struct {
	partitionKey string
	fields       map[string]any
}

// readDeadLetters reads every record of a one-shard dead-letter stream; it returns errors instead
// of failing the test, so that a caller polling for the letters can retry a read that failed.
func readDeadLetters(ctx context.Context, client *kinesis.Client, stream string) ([]deadLetter, error) {
	recs, err := readShardRecords(ctx, client, stream, "shardId-000000000000")
	if err != nil {
		return nil, err
	}
	out := make([]deadLetter, 0, len(recs))
	for _, rec := range recs {
		d := deadLetter{partitionKey: aws.ToString(rec.PartitionKey)}
		if err := json.Unmarshal(rec.Data, &d.fields); err != nil {
			return nil, fmt.Errorf("dead letter %q is not JSON: %w", rec.Data, err)
		}
		out = append(out, d)
	}
	return out, nil
}

func waitDeadLetters(t *testing.T, client *kinesis.Client, stream string, n int, timeout time.Duration) []deadLetter {
	t.Helper()
	var got []deadLetter
	testwait.Eventually(t, func() bool {
		var err error
		got, err = readDeadLetters(t.Context(), client, stream)
		return err == nil && len(got) >= n
	}, timeout, 50*time.Millisecond, "%d dead letters on %s", n, stream)
	return got
}

func (d deadLetter) data(t *testing.T) string {
	t.Helper()
	s, ok := d.fields["data"].(string)
	require.True(t, ok, "data is a string: %v", d.fields)
	raw, err := base64.StdEncoding.DecodeString(s)
	require.NoError(t, err, "data is base64")
	return string(raw)
}

// sourceRecords maps each record's data to its shard and record, from the raw stream.
func sourceRecords(t *testing.T, client *kinesis.Client, stream string) map[string]struct {
	shard string
	rec   types.Record
} {
	out := map[string]struct {
		shard string
		rec   types.Record
	}{}
	for shard, recs := range streamRecords(t, client, stream) {
		for _, r := range recs {
			out[string(r.Data)] = struct {
				shard string
				rec   types.Record
			}{shard, r}
		}
	}
	return out
}

// waitCheckpointsAtTheEnd waits until every shard's checkpoint in the lease table is its last record:
// nothing given up on was left behind the watermark.
func waitCheckpointsAtTheEnd(t *testing.T, client *kinesis.Client, stream, table string, timeout time.Duration) {
	t.Helper()
	last := lastSeqs(t, client, stream)
	testwait.Eventually(t, func() bool {
		_, cps := shLeases(t, table)
		return maps.Equal(cps, last)
	}, timeout, 50*time.Millisecond, "the checkpoint of every shard reaches its last record")
}

func without(all []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(all), func(s string) bool { return slices.Contains(drop, s) })
}

// TestDeadLettersKeepTheRecordsThatKeepFailing: a record that fails maxDeliveryAttempts times is put
// on the dead-letter stream, in the documented envelope and with its own partition key, and only
// then does its key go on; meanwhile the other keys of its shard go on; every other record is
// delivered and the checkpoint reaches the end of every shard.
func TestDeadLettersKeepTheRecordsThatKeepFailing(t *testing.T) {
	t.Parallel()
	for _, mode := range []consumerMode{modeShared, modeExtended} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			stream, dl := localaws.NewStream(t, 2), localaws.NewStream(t, 1)
			client := localaws.Get(t).KinesisClient()
			b, props := concurrentBinding(t, mode, stream, "concurrencyPerShard", "4", "maxDeliveryAttempts", "3",
				"deadLetterStream", dl, "retryInitialInterval", "300ms", "retryMaxInterval", "300ms")
			poison := []string{laneRecord("dl", 0, 3), laneRecord("dl", 5, 1)}
			h := newRefusing(30*time.Millisecond, poison...)
			require.NoError(t, b.Read(t.Context(), h.handle))
			sent, err := putLanes(t.Context(), client, stream, "dl", 8, 0, 10)
			require.NoError(t, err)

			letters := waitDeadLetters(t, client, dl, 2, 60*time.Second)
			want := without(sent, poison...)
			testwait.Eventually(t, func() bool { return len(missingFrom(want, h.succeeded())) == 0 }, 60*time.Second, 50*time.Millisecond)

			source := sourceRecords(t, client, stream)
			require.Len(t, letters, 2, "one dead letter per poisoned record")
			for _, d := range letters {
				data := d.data(t)
				require.Contains(t, poison, data)
				_, lane, _, _ := parseLaneRecord(data)
				src := source[data]
				assert.Equal(t, laneKey(lane), d.partitionKey, "put with the record's own partition key")
				assert.ElementsMatch(t, []string{"data", "partitionKey", "streamName", "shardId", "sequenceNumber",
					"approximateArrivalTimestamp", "attempts", "error", "deadLetteredAt"}, slices.Collect(maps.Keys(d.fields)))
				assert.Equal(t, laneKey(lane), d.fields["partitionKey"])
				assert.Equal(t, stream, d.fields["streamName"])
				assert.Equal(t, src.shard, d.fields["shardId"])
				assert.Equal(t, aws.ToString(src.rec.SequenceNumber), d.fields["sequenceNumber"])
				assert.Equal(t, src.rec.ApproximateArrivalTimestamp.UTC().Format(arrivalTimeLayout), d.fields["approximateArrivalTimestamp"])
				assert.InDelta(t, 3, d.fields["attempts"], 0)
				assert.Equal(t, "app refuses "+data, d.fields["error"])
				at, err := time.Parse(time.RFC3339, fmt.Sprint(d.fields["deadLetteredAt"]))
				require.NoError(t, err, "deadLetteredAt is RFC 3339")
				calls := h.callsOf(data)
				require.Len(t, calls, 3, "maxDeliveryAttempts calls, no more")
				assert.False(t, at.Before(calls[2].end.Add(-time.Second)), "dead-lettered after the last call")
			}

			// Lane 0's next record waits for its poisoned predecessor to be kept; other keys of that
			// shard are delivered while it is retried.
			calls := h.callsOf(poison[0])
			next := h.callsOf(laneRecord("dl", 0, 4))
			require.NotEmpty(t, next)
			assert.True(t, next[0].start.After(calls[2].end), "the key's next record starts after its predecessor failed for the last time")
			others := 0
			h.mu.Lock()
			for _, c := range h.calls {
				_, lane, _, _ := parseLaneRecord(c.data)
				if lane != 0 && source[c.data].shard == source[poison[0]].shard && c.start.After(calls[0].end) && c.end.Before(calls[2].start) {
					others++
				}
			}
			h.mu.Unlock()
			assert.Positive(t, others, "other keys of the shard go on while the poisoned record waits for its retries")

			waitCheckpointsAtTheEnd(t, client, stream, props["consumerName"], 10*time.Second)
		})
	}
}

// TestDeadLetterStreamRefusingPutsHoldsTheRecordUntilItIsBack: while the dead-letter stream refuses
// puts (it was deleted after Read), the record given up on is not skipped: the checkpoint stays
// before it and its key waits, while the other keys go on; once the stream is back the record lands
// there and delivery of its key goes on.
func TestDeadLetterStreamRefusingPutsHoldsTheRecordUntilItIsBack(t *testing.T) {
	t.Parallel()
	stream, dl := localaws.NewStream(t, 1), localaws.NewStream(t, 1)
	srv := localaws.Get(t)
	client := srv.KinesisClient()
	log, logs := testlog.New(t)
	props := withConsumer(localProps(t, stream), modeShared)
	maps.Copy(props, map[string]string{
		"concurrencyPerShard": "4", "maxDeliveryAttempts": "1", "deadLetterStream": dl,
		"retryInitialInterval": "50ms", "retryMaxInterval": "200ms",
	})
	b := newBinding(t, props, func(b *AWSKinesis) { b.logger = log })
	poison := laneRecord("rf", 0, 1)
	h := newRefusing(0, poison)
	require.NoError(t, b.Read(t.Context(), h.handle))
	_, err := client.DeleteStream(t.Context(), &kinesis.DeleteStreamInput{StreamName: aws.String(dl)})
	require.NoError(t, err)
	testwait.Eventually(t, func() bool {
		_, describeErr := client.DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(dl)})
		var gone *types.ResourceNotFoundException
		return errors.As(describeErr, &gone)
	}, 10*time.Second, 20*time.Millisecond)

	sent, err := putLanes(t.Context(), client, stream, "rf", 4, 0, 5)
	require.NoError(t, err)
	var poisonSeq string
	for _, r := range streamRecords(t, client, stream)["shardId-000000000000"] {
		if string(r.Data) == poison {
			poisonSeq = aws.ToString(r.SequenceNumber)
		}
	}
	var laterOfItsKey, others []string
	for _, d := range sent {
		if _, lane, i, _ := parseLaneRecord(d); lane == 0 && i > 1 {
			laterOfItsKey = append(laterOfItsKey, d)
		} else if d != poison {
			others = append(others, d)
		}
	}
	testwait.Eventually(t, func() bool {
		return len(missingFrom(others, h.succeeded())) == 0 && logs.Count("Dead-letter put failed") >= 3
	}, 30*time.Second, 20*time.Millisecond, "the other keys go on while the dead-letter put is retried")
	for range 5 {
		_, cps := shLeases(t, props["consumerName"])
		cp := cps["shardId-000000000000"]
		assert.True(t, cp == "" || position.SeqLess(cp, poisonSeq), "checkpoint %s stays before the record %s", cp, poisonSeq)
		time.Sleep(200 * time.Millisecond)
	}
	assert.Empty(t, slices.DeleteFunc(h.succeeded(), func(d string) bool { return !slices.Contains(laterOfItsKey, d) }),
		"the key's later records wait")

	testwait.Eventually(t, func() bool { return srv.CreateStream(t.Context(), client, dl, 1) == nil }, 20*time.Second, 200*time.Millisecond)
	letters := waitDeadLetters(t, client, dl, 1, 30*time.Second)
	assert.Equal(t, poison, letters[0].data(t))
	assert.InDelta(t, 1, letters[0].fields["attempts"], 0)
	testwait.Eventually(t, func() bool { return len(missingFrom(laterOfItsKey, h.succeeded())) == 0 }, 30*time.Second, 20*time.Millisecond)
	waitCheckpointsAtTheEnd(t, client, stream, props["consumerName"], 10*time.Second)
	assert.Len(t, h.callsOf(poison), 1, "the handler is not called again while the put is retried")
}

func TestDeadLetterStreamMissingFailsRead(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 1)
	missing := localaws.UniqueName("no-such-dl")
	b, _ := concurrentBinding(t, modeShared, stream, "maxDeliveryAttempts", "2", "deadLetterStream", missing)
	err := b.Read(t.Context(), newRecorder().handle)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "'deadLetterStream'")
	assert.Contains(t, err.Error(), missing)
	var notFound *types.ResourceNotFoundException
	assert.ErrorAs(t, err, &notFound)
}

// TestMaxRecordAgeSkipsOrDeadLettersOldRecords: records older than maxRecordAge when they come up
// are not delivered; with a dead-letter stream they land there (attempts 0), without one each is
// logged at warning level with its shard and sequence number; younger records are delivered.
func TestMaxRecordAgeSkipsOrDeadLettersOldRecords(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode       consumerMode
		deadLetter bool
	}{{modeShared, true}, {modeExtended, false}} {
		t.Run(string(tc.mode)+" dead-letter stream "+strconv.FormatBool(tc.deadLetter), func(t *testing.T) {
			t.Parallel()
			stream := localaws.NewStream(t, 1)
			client := localaws.Get(t).KinesisClient()
			log, logs := testlog.New(t)
			props := withConsumer(localProps(t, stream), tc.mode)
			props["maxRecordAge"] = "3s"
			dl := ""
			if tc.deadLetter {
				dl = localaws.NewStream(t, 1)
				props["deadLetterStream"], props["maxDeliveryAttempts"] = dl, "5"
			}
			old, err := putLanes(t.Context(), client, stream, "old", 3, 0, 2)
			require.NoError(t, err)
			time.Sleep(4 * time.Second)
			configure := func(b *AWSKinesis) { b.logger = log }
			var b *AWSKinesis
			if tc.mode == modeExtended {
				b = newBinding(t, props, configure, func(b *AWSKinesis) { b.sdkHTTPClient = newFanoutFixClient() })
			} else {
				b = newBinding(t, props, configure)
			}
			rec := newRecorder()
			require.NoError(t, b.Read(t.Context(), rec.handle))

			if tc.deadLetter {
				letters := waitDeadLetters(t, client, dl, len(old), 30*time.Second)
				got := make([]string, 0, len(letters))
				for _, d := range letters {
					got = append(got, d.data(t))
					assert.InDelta(t, 0, d.fields["attempts"], 0)
					assert.Contains(t, d.fields["error"], "record older than maxRecordAge (3s)")
				}
				assert.ElementsMatch(t, old, got)
			} else {
				testwait.Eventually(t, func() bool {
					return logs.Count("Skipping the record: record older than maxRecordAge (3s)") == len(old)
				}, 30*time.Second, 20*time.Millisecond, logs.String())
				for _, line := range strings.Split(logs.String(), "\n") {
					if !strings.Contains(line, "older than maxRecordAge") {
						continue
					}
					assert.Contains(t, line, "level=warning")
					assert.Contains(t, line, "shardId=shardId-000000000000")
					assert.Contains(t, line, "sequenceNumber=")
				}
			}
			fresh, err := putLanes(t.Context(), client, stream, "new", 3, 0, 2)
			require.NoError(t, err)
			rec.waitFor(t, fresh, 30*time.Second)
			rec.mu.Lock()
			for _, d := range old {
				assert.Zero(t, rec.count[d], "%s is never delivered", d)
			}
			rec.mu.Unlock()
			waitCheckpointsAtTheEnd(t, client, stream, props["consumerName"], 10*time.Second)
		})
	}
}

// TestDeadLetterThenCrashGivesADuplicateNeverALoss: the binding stops, as the lease table sees a
// crash, after the dead-letter put and before the checkpoint passed the record (DynamoDB refuses
// from the record's first failure on, so neither the checkpoint nor the final release is written).
// The next owner delivers the record again from the last checkpoint and dead-letters it again: a
// duplicate on the dead-letter stream, nothing lost.
func TestDeadLetterThenCrashGivesADuplicateNeverALoss(t *testing.T) {
	t.Parallel()
	stream, dl := localaws.NewStream(t, 1), localaws.NewStream(t, 1)
	srv := localaws.Get(t)
	client := srv.KinesisClient()
	table := newFaultProxy(t, srv.DynamoDBEndpoint)
	props := withConsumer(localProps(t, stream), modeShared)
	maps.Copy(props, map[string]string{
		"dynamoDBEndpoint": table.URL(), "maxDeliveryAttempts": "2", "deadLetterStream": dl,
		"retryInitialInterval": "50ms", "retryMaxInterval": "50ms",
	})
	sent, err := putLanes(t.Context(), client, stream, "cr", 2, 0, 3)
	require.NoError(t, err)
	poison := laneRecord("cr", 0, 3)
	_, err = putLanes(t.Context(), client, stream, "cr", 1, 3, 4)
	require.NoError(t, err)

	first := newRefusing(0, poison)
	first.onFail = func(_ string, attempt int) {
		if attempt == 1 {
			table.Refuse()
		}
	}
	b1 := newBinding(t, props)
	require.NoError(t, b1.Read(t.Context(), first.handle))
	waitDeadLetters(t, client, dl, 1, 30*time.Second)
	require.NoError(t, b1.Close())
	_, cps := shLeases(t, props["consumerName"])
	poisonSeq := aws.ToString(streamRecords(t, client, stream)["shardId-000000000000"][len(sent)].SequenceNumber)
	cp := cps["shardId-000000000000"]
	require.True(t, cp == "" || position.SeqLess(cp, poisonSeq), "the checkpoint %s stayed before the record", cp)

	table.Resume()
	again := newRefusing(0, poison)
	b2 := newBinding(t, props)
	require.NoError(t, b2.Read(t.Context(), again.handle))
	letters := waitDeadLetters(t, client, dl, 2, 30*time.Second)
	require.Len(t, letters, 2)
	for _, d := range letters {
		assert.Equal(t, poison, d.data(t))
		assert.Equal(t, poisonSeq, d.fields["sequenceNumber"])
	}
	checkNoneLost(t, sent, append(first.succeeded(), again.succeeded()...))
	waitCheckpointsAtTheEnd(t, client, stream, props["consumerName"], 20*time.Second)
}
