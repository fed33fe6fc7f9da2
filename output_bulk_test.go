package kinesis

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr/components-contrib/bindings"
)

// bulkPayload is a bulkCreate array of n entries keyed bulk-<i>, whose data is data(i) (JSON text).
func bulkPayload(n int, data func(i int) string) string {
	var sb strings.Builder
	sb.WriteByte('[')
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"data":%s,"partitionKey":"bulk-%d"}`, data(i), i)
	}
	sb.WriteByte(']')
	return sb.String()
}

func bulkCreate(ctx context.Context, b *AWSKinesis, payload string, md map[string]string) ([]bulkResult, *bindings.InvokeResponse, error) {
	resp, err := b.Invoke(ctx, &bindings.InvokeRequest{Operation: bulkCreateOperation, Data: []byte(payload), Metadata: md})
	if resp == nil {
		return nil, nil, err
	}
	var results []bulkResult
	if jerr := json.Unmarshal(resp.Data, &results); jerr != nil {
		panic(jerr)
	}
	return results, resp, err
}

// requireBulkWritten checks each successful entry against GetRecords: the record at its position has
// its key and wantData[i]; and the stream holds nothing else.
func requireBulkWritten(t *testing.T, client server, stream string, results []bulkResult, wantKey, wantData func(i int) string) {
	t.Helper()
	written := client.recordsFor(t, stream)
	ok := 0
	for i, r := range results {
		if r.ErrorCode != "" {
			continue
		}
		ok++
		got, found := written[r.ShardID+"/"+r.SequenceNumber]
		require.True(t, found, "entry %d: no record at %s/%s", i, r.ShardID, r.SequenceNumber)
		assert.Equal(t, wantKey(i), got.PartitionKey, "entry %d", i)
		assert.Equal(t, wantData(i), string(got.Data), "entry %d", i)
	}
	assert.Len(t, written, ok, "each valid entry written once, nothing else")
}

// server names the emulator a stream lives on.
type server string

func (s server) recordsFor(t testing.TB, stream string) map[string]spyEntry {
	if s == "kinesalite" {
		return recordsByPosition(t, localaws.Get(t).KinesaliteClient(), stream)
	}
	return recordsByPosition(t, localaws.Get(t).KinesisClient(), stream)
}

func TestBulkCreateAnswersEachEntryInRequestOrder(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 2)
	spy := newPutSpy()
	b := newBinding(t, localProps(t, stream), spy.install)

	// Good entries carry any JSON value; bad ones are reported in place and not sent.
	entries := []struct {
		json     string
		wantData string // "" for an entry that must fail
		wantErr  string
	}{
		{`{"data":{"order":1},"partitionKey":"a"}`, `{"order":1}`, ""},
		{`{"data":"text","partitionKey":"b","explicitHashKey":"0"}`, `"text"`, ""},
		{`{"data":42,"partitionKey":"c"}`, `42`, ""},
		{`{"data":1,"partitionKey":"d","explicitHashKey":"-1"}`, "", "'explicitHashKey' must be a decimal integer"},
		{`{"data":[1,2],"partitionKey":"e"}`, `[1,2]`, ""},
		{`{"partitionKey":"f"}`, "", "'data' is required"},
		{`{"data":1,"partition_key":"g"}`, "", `unknown field "partition_key"`},
		{`{"data":1,"partitionKey":"` + strings.Repeat("h", 257) + `"}`, "", "'partitionKey' must be 1 to 256 characters"},
		{`{"data":"` + strings.Repeat("i", defaultMaxRecordSize) + `","partitionKey":"i"}`, "", "exceeds the stream's maximum record size"},
		{`17`, "", "not a record object"},
		{`{"data":null,"partitionKey":"j"}`, `null`, ""},
	}
	payload := make([]string, 0, len(entries))
	for _, e := range entries {
		payload = append(payload, e.json)
	}
	results, resp, err := bulkCreate(t.Context(), b, "["+strings.Join(payload, ",")+"]", nil)
	require.NoError(t, err)
	require.Len(t, results, len(entries))
	assert.Equal(t, "application/json", *resp.ContentType)
	assert.Equal(t, strconv.Itoa(len(entries)), resp.Metadata[respRecordCount])
	assert.Equal(t, "6", resp.Metadata[respFailedCount])

	for i, e := range entries {
		if e.wantErr != "" {
			assert.Equal(t, codeInvalidEntry, results[i].ErrorCode, "entry %d", i)
			assert.Contains(t, results[i].ErrorMessage, e.wantErr, "entry %d", i)
			assert.Empty(t, results[i].SequenceNumber)
			continue
		}
		assert.Empty(t, results[i].ErrorCode, "entry %d: %s", i, results[i].ErrorMessage)
	}
	assert.Equal(t, "shardId-000000000000", results[1].ShardID, "explicitHashKey 0 picks the first shard")
	requireBulkWritten(t, server("kinesis-local"), stream, results,
		func(i int) string { return "abcdefghi-j"[i : i+1] },
		func(i int) string { return entries[i].wantData })
	assert.Len(t, spy.sent("PutRecords"), 1, "the valid entries share one request")
}

func TestBulkCreateBase64Data(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 1)
	b := newBinding(t, kinesaliteProps(t, stream))

	binary := []byte{0, 1, 2, 0xff, 0xfe}
	payload := fmt.Sprintf(`[{"data":%q,"partitionKey":"bin"},{"data":"not base64!","partitionKey":"bad"},{"data":{"a":1},"partitionKey":"obj"}]`,
		base64.StdEncoding.EncodeToString(binary))
	results, _, err := bulkCreate(t.Context(), b, payload, map[string]string{reqDataEncoding: "base64"})
	require.NoError(t, err)
	require.Len(t, results, 3)
	assert.Empty(t, results[0].ErrorCode)
	assert.Equal(t, codeInvalidEntry, results[1].ErrorCode)
	assert.Contains(t, results[1].ErrorMessage, "'data' is not valid base64")
	assert.Equal(t, codeInvalidEntry, results[2].ErrorCode)
	assert.Contains(t, results[2].ErrorMessage, "'data' must be a base64 string")

	written := recordsByPosition(t, localaws.Get(t).KinesaliteClient(), stream)
	require.Len(t, written, 1)
	assert.Equal(t, binary, written[results[0].ShardID+"/"+results[0].SequenceNumber].Data)
}

func TestBulkCreateRejectsAMalformedPayloadAndWritesNothing(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 1)
	spy := newPutSpy()
	b := newBinding(t, kinesaliteProps(t, stream), spy.install)

	tests := []struct {
		name    string
		payload string
		md      map[string]string
		want    string
	}{
		{"object", `{"data":1}`, nil, "bulkCreate data must be a JSON array of records"},
		{"truncated", `[{"data":1},{"data":`, nil, "bulkCreate data must be a JSON array of records"},
		{"null", `null`, nil, "bulkCreate data must be a JSON array of records: not an array"},
		{"string", `"[]"`, nil, "bulkCreate data must be a JSON array of records"},
		{"empty", ``, nil, "bulkCreate data must be a JSON array of records"},
		{"trailing garbage", `[{"data":1}] x`, nil, "bulkCreate data must be a JSON array of records"},
		{"unknown encoding", `[{"data":1}]`, map[string]string{reqDataEncoding: "hex"}, "request metadata 'dataEncoding' must be json or base64"},
		{"ordering", `[{"data":1}]`, map[string]string{reqSequenceNumberForOrdering: "1"}, "request metadata 'sequenceNumberForOrdering' is not supported by bulkCreate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, resp, err := bulkCreate(t.Context(), b, tc.payload, tc.md)
			require.Error(t, err)
			assert.Nil(t, resp)
			assert.Contains(t, err.Error(), "kinesis binding error: "+tc.want)
		})
	}
	assert.Empty(t, spy.sent("PutRecords"))
	assert.Empty(t, spy.sent("PutRecord"))

	results, _, err := bulkCreate(t.Context(), b, `[]`, nil)
	require.NoError(t, err, "an empty array is valid and writes nothing")
	assert.Empty(t, results)
	assert.Empty(t, recordsByPosition(t, localaws.Get(t).KinesaliteClient(), stream))
}

func TestBulkCreateSplitsIntoAsManyRequestsAsTheLimitsNeed(t *testing.T) {
	t.Parallel()
	key := func(i int) string { return fmt.Sprintf("bulk-%d", i) }

	t.Run("entries", func(t *testing.T) {
		t.Parallel()
		stream := kinesaliteStream(t, 4)
		spy := newPutSpy()
		b := newBinding(t, kinesaliteProps(t, stream), spy.install)
		data := strconv.Itoa

		results, _, err := bulkCreate(t.Context(), b, bulkPayload(2*maxBatchRecords+1, data), nil)
		require.NoError(t, err)
		requireBulkWritten(t, server("kinesalite"), stream, results, key, data)
		sent := spy.sent("PutRecords")
		sizes := make([]int, 0, len(sent))
		for _, r := range sent {
			sizes = append(sizes, len(r.keys))
		}
		assert.ElementsMatch(t, []int{500, 500, 1}, sizes)
	})

	t.Run("bytes", func(t *testing.T) {
		t.Parallel()
		// Five records of 1 MiB with their keys (data is a JSON string: its quotes count) make exactly
		// one full request; one more small record makes a second.
		for _, extra := range []bool{false, true} {
			stream := kinesaliteStream(t, 2)
			spy := newPutSpy()
			b := newBinding(t, kinesaliteProps(t, stream), spy.install)
			var values []string
			data := func(i int) string { return values[i] }
			for i := range 5 {
				n := defaultMaxRecordSize - len(key(i)) - 2
				values = append(values, `"`+strings.Repeat("b", n)+`"`)
			}
			if extra {
				values = append(values, `1`)
			}
			results, _, err := bulkCreate(t.Context(), b, bulkPayload(len(values), data), nil)
			require.NoError(t, err)
			requireBulkWritten(t, server("kinesalite"), stream, results, key, data)
			sent := spy.sent("PutRecords")
			total := 0
			for _, r := range sent {
				assert.LessOrEqual(t, r.bytes, maxBatchBytes)
				total += r.bytes
			}
			if !extra {
				assert.Len(t, sent, 1)
				assert.Equal(t, maxBatchBytes, total)
			} else {
				assert.Len(t, sent, 2)
			}
		}
	})
}

func TestBulkCreateRetriesOnlyFailedEntriesAndReportsTheRest(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 2)
	spy := newPutSpy()
	spy.fail = func(key string, attempt int) string {
		switch {
		case key == "bulk-3" && attempt <= 2, key == "bulk-7" && attempt == 1:
			return codeThroughputExceeded
		case key == "bulk-5":
			return "KMSAccessDeniedException"
		}
		return ""
	}
	b := newBinding(t, kinesaliteProps(t, stream), spy.install)
	data := strconv.Itoa

	results, resp, err := bulkCreate(t.Context(), b, bulkPayload(10, data), nil)
	require.NoError(t, err)
	assert.Equal(t, "1", resp.Metadata[respFailedCount])
	assert.Equal(t, "KMSAccessDeniedException", results[5].ErrorCode)
	assert.Contains(t, results[5].ErrorMessage, "(the record was not written)")
	requireBulkWritten(t, server("kinesalite"), stream, results, func(i int) string { return fmt.Sprintf("bulk-%d", i) }, data)

	sent := spy.sentKeys()
	for i := range 10 {
		want := map[int]int{3: 3, 7: 2}[i]
		assert.Equal(t, max(want, 1), sent[fmt.Sprintf("bulk-%d", i)], "entry %d", i)
	}
}

func TestBulkCreateKeepsWithinMaxInFlightBatches(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 2)
	spy := newPutSpy()
	spy.delay = 50 * time.Millisecond
	b := newBinding(t, kinesaliteProps(t, stream, "maxInFlightBatches", "2"), spy.install)

	results, _, err := bulkCreate(t.Context(), b, bulkPayload(6*maxBatchRecords, strconv.Itoa), nil)
	require.NoError(t, err)
	assert.Len(t, results, 6*maxBatchRecords)
	assert.Len(t, spy.sent("PutRecords"), 6)
	assert.Equal(t, 2, spy.peakInFlight(), "chunks go out in parallel, two at a time")
}

func TestBulkCreateCallerThatGivesUpIsAnsweredAtOnce(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 1)
	spy := newPutSpy()
	spy.hold = make(chan struct{})
	defer close(spy.hold)
	b := newBinding(t, kinesaliteProps(t, stream, "maxInFlightBatches", "1"), spy.install)
	described(t, b)

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	results, _, err := bulkCreate(ctx, b, bulkPayload(maxBatchRecords+1, strconv.Itoa), nil)
	// Well before the request, which hangs for the rest of the test, could end; the margin is for
	// a loaded machine under -race.
	assert.Less(t, time.Since(began), 5*time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "501 of 501 failed")
	require.Len(t, results, maxBatchRecords+1)
	assert.Equal(t, "DeadlineExceeded", results[0].ErrorCode)
	assert.Contains(t, results[0].ErrorMessage, "(the record may have been written)", "its request was in flight")
	assert.Contains(t, results[maxBatchRecords].ErrorMessage, "(the record was not written)", "its request never got a slot")
}
