package kinesis

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/producer"
)

// putSpy is the binding's HTTP client in the producer tests (set through the sdkHTTPClient seam,
// which no metadata reaches). It forwards to the real emulator and records every PutRecord(s) the
// binding sends. It can fail chosen PutRecords entries the way AWS does: such an entry is removed
// from the request before it is forwarded and its error is put back into the answer at its place,
// so the emulator's stream holds exactly what the binding was told was written.
type putSpy struct {
	client *http.Client

	// fail returns the error code for an entry's attempt (1 for the first), or "" to forward it.
	fail func(partitionKey string, attempt int) string
	// hold, when set, keeps each PutRecord(s) waiting until it is closed or the request is cancelled;
	// with holdOnly set, only requests that carry that partition key.
	hold     chan struct{}
	holdOnly string
	// delay is added to each PutRecord(s), to make requests overlap.
	delay time.Duration

	mu          sync.Mutex
	requests    []spyRequest
	attempts    map[string]int
	inFlight    int
	maxInFlight int
	arrived     chan struct{} // one value per PutRecord(s) received
}

type spyRequest struct {
	op    string   // PutRecords or PutRecord
	keys  []string // partition keys, in request order
	bytes int      // data plus partition keys, what the 5 MiB limit counts
}

func newPutSpy() *putSpy {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false // kinesis-local is ~20x slower over HTTP/2
	tr.MaxIdleConnsPerHost = 64
	return &putSpy{client: &http.Client{Transport: tr}, attempts: map[string]int{}, arrived: make(chan struct{}, 10000)}
}

// install sets the spy as the binding's HTTP client; use it as newBinding's configure argument.
func (s *putSpy) install(b *AWSKinesis) { b.sdkHTTPClient = s }

func (s *putSpy) Do(req *http.Request) (*http.Response, error) {
	target := req.Header.Get("X-Amz-Target")
	op := target[strings.LastIndexByte(target, '.')+1:]
	if op != "PutRecords" && op != "PutRecord" {
		return s.client.Do(req)
	}
	body, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		return nil, err
	}
	held := s.begin(op, body)
	defer s.end()

	if held && s.hold != nil {
		select {
		case <-s.hold:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	if op == "PutRecords" && s.fail != nil {
		return s.putRecordsWithFaults(req, body)
	}
	return s.forward(req, body)
}

// begin records a request and tells whether it is one to hold.
func (s *putSpy) begin(op string, body []byte) (held bool) {
	r := spyRequest{op: op}
	held = s.holdOnly == ""
	for _, e := range parseSpyEntries(body) {
		r.keys = append(r.keys, e.PartitionKey)
		r.bytes += len(e.Data) + len(e.PartitionKey)
		held = held || e.PartitionKey == s.holdOnly
	}
	s.mu.Lock()
	s.requests = append(s.requests, r)
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
	s.mu.Unlock()
	s.arrived <- struct{}{}
	return held
}

func (s *putSpy) end() {
	s.mu.Lock()
	s.inFlight--
	s.mu.Unlock()
}

type spyEntry struct {
	Data         []byte `json:"Data"`
	PartitionKey string `json:"PartitionKey"`
}

// parseSpyEntries reads the entries of a PutRecords body, or the one record of a PutRecord body.
func parseSpyEntries(body []byte) []spyEntry {
	var in struct {
		Records []spyEntry `json:"Records"`
		spyEntry
	}
	if err := json.Unmarshal(body, &in); err != nil {
		panic(fmt.Sprintf("putSpy: unreadable request: %v", err))
	}
	if in.Records != nil {
		return in.Records
	}
	return []spyEntry{in.spyEntry}
}

func (s *putSpy) forward(req *http.Request, body []byte) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	out.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return s.client.Do(out)
}

// putRecordsWithFaults forwards the entries that pass and splices the injected failures back in.
func (s *putSpy) putRecordsWithFaults(req *http.Request, body []byte) (*http.Response, error) {
	var in map[string]json.RawMessage
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(in["Records"], &raw); err != nil {
		return nil, err
	}
	entries := parseSpyEntries(body)
	injected := make([]string, len(raw)) // error code per entry, "" when forwarded
	var kept []json.RawMessage
	s.mu.Lock()
	for i, e := range entries {
		s.attempts[e.PartitionKey]++
		injected[i] = s.fail(e.PartitionKey, s.attempts[e.PartitionKey])
		if injected[i] == "" {
			kept = append(kept, raw[i])
		}
	}
	s.mu.Unlock()

	var answered []json.RawMessage
	failed := 0
	var resp *http.Response
	if len(kept) > 0 {
		in["Records"], _ = json.Marshal(kept)
		reduced, _ := json.Marshal(in)
		var err error
		if resp, err = s.forward(req, reduced); err != nil {
			return nil, err
		}
		respBody, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return replaceBody(resp, respBody), nil
		}
		var out struct {
			FailedRecordCount int               `json:"FailedRecordCount"`
			Records           []json.RawMessage `json:"Records"`
		}
		if err := json.Unmarshal(respBody, &out); err != nil {
			return nil, err
		}
		answered, failed = out.Records, out.FailedRecordCount
	}
	merged := make([]json.RawMessage, len(raw))
	for i, code := range injected {
		if code == "" {
			merged[i], answered = answered[0], answered[1:]
			continue
		}
		failed++
		merged[i], _ = json.Marshal(map[string]string{"ErrorCode": code, "ErrorMessage": "injected by the test for " + entries[i].PartitionKey})
	}
	newBody, _ := json.Marshal(map[string]any{"FailedRecordCount": failed, "Records": merged})
	if resp == nil {
		resp = &http.Response{
			StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header:  http.Header{"Content-Type": []string{"application/x-amz-json-1.1"}, "X-Amzn-Requestid": []string{"spy"}},
			Request: req,
		}
	}
	return replaceBody(resp, newBody), nil
}

func replaceBody(resp *http.Response, body []byte) *http.Response {
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	resp.Header.Del("X-Amz-Crc32")
	return resp
}

// sent returns the requests of one operation the binding made.
func (s *putSpy) sent(op string) []spyRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []spyRequest
	for _, r := range s.requests {
		if r.op == op {
			out = append(out, r)
		}
	}
	return out
}

// sentKeys counts how often each partition key was sent, over all requests.
func (s *putSpy) sentKeys() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := map[string]int{}
	for _, r := range s.requests {
		for _, k := range r.keys {
			n[k]++
		}
	}
	return n
}

func (s *putSpy) peakInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInFlight
}

// waitArrived waits until n PutRecord(s) requests have reached the spy.
func (s *putSpy) waitArrived(t testing.TB, n int) {
	t.Helper()
	for range n {
		select {
		case <-s.arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("putSpy: request did not arrive")
		}
	}
}

// blockWith puts a record that the spy holds in flight, so that the batcher, which sends at once to
// an idle server, lingers and fills its batch instead. The returned func releases it and checks
// that it was written.
func (s *putSpy) blockWith(t testing.TB, b *AWSKinesis) (release func()) {
	t.Helper()
	s.hold, s.holdOnly = make(chan struct{}), "blocker"
	s.drainArrived()
	done := make(chan error, 1)
	go func() {
		_, err := create(context.Background(), b, []byte("blocker"), map[string]string{reqPartitionKey: "blocker"})
		done <- err
	}()
	s.waitArrived(t, 1)
	return func() {
		close(s.hold)
		require.NoError(t, <-done)
	}
}

// drainArrived forgets the requests that have arrived so far, for a later waitArrived.
func (s *putSpy) drainArrived() {
	for len(s.arrived) > 0 {
		<-s.arrived
	}
}

// kinesaliteStream creates a stream on kinesalite (faster than kinesis-local, for load and error
// paths) and deletes it when the test ends.
func kinesaliteStream(t testing.TB, shards int32) string {
	t.Helper()
	srv := localaws.Get(t)
	client := srv.KinesaliteClient()
	name := localaws.UniqueName(t.Name())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, srv.CreateStream(ctx, client, name, shards))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = client.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(name)})
	})
	return name
}

// kinesaliteProps is the component metadata of a binding on kinesalite.
func kinesaliteProps(t testing.TB, stream string, extra ...string) map[string]string {
	props := localProps(t, stream)
	props["endpoint"] = localaws.Get(t).KinesaliteEndpoint
	for i := 0; i+1 < len(extra); i += 2 {
		props[extra[i]] = extra[i+1]
	}
	return props
}

// recordsByPosition reads the whole stream, keyed by "shardId/sequenceNumber".
func recordsByPosition(t testing.TB, client *kinesis.Client, stream string) map[string]spyEntry {
	t.Helper()
	out := map[string]spyEntry{}
	for shard, recs := range streamRecords(t, client, stream) {
		for _, r := range recs {
			out[shard+"/"+aws.ToString(r.SequenceNumber)] = spyEntry{Data: r.Data, PartitionKey: aws.ToString(r.PartitionKey)}
		}
	}
	return out
}

// AWS's limits and PutRecords entry error codes, as the output tests use them.
const (
	defaultMaxRecordSize = producer.DefaultMaxRecordSize
	maxBatchRecords      = producer.MaxBatchRecords
	maxBatchBytes        = producer.MaxBatchBytes
	shardMapMinInterval  = producer.ShardMapMinInterval

	codeThroughputExceeded = "ProvisionedThroughputExceededException"
	codeKMSThrottling      = "KMSThrottlingException"
	codeInternalFailure    = "InternalFailure"
)
