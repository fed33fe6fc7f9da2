package localaws

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// KeylessPartitionKeyPrefix starts the partition key AutoDistribution gives a record put without
// one on an AUTO stream: kinesis-local rejects a put without a key, AWS stores none. GetRecords
// answers through the proxy drop keys that start with it, as AWS returns none for such records.
// It is a prefix by convention only: a producer that uses it for its own keys loses them on read.
const KeylessPartitionKeyPrefix = "localaws-keyless-"

const (
	targetPrefix      = "Kinesis_20131202."
	jsonContentType   = "application/x-amz-json-1.1"
	strategyAuto      = "AUTO"
	strategyUserKey   = "USER_PARTITION_KEY"
	streamModeOnDmd   = "ON_DEMAND"
	maxRequestBody    = 16 << 20 // above what kinesis-local accepts (5.4 MiB), bounds what a put holds
	readHeaderTimeout = 10 * time.Second
)

// AutoDistribution is an HTTP proxy in front of a Kinesis endpoint (kinesis-local) that adds
// RecordDistributionStrategy AUTO, which kinesis-local 0.6.2 lacks:
//
//   - UpdateStreamRecordDistributionStrategy is answered here and remembered per stream (AUTO only
//     on on-demand streams, as AWS); DescribeStreamSummary of an on-demand stream reports it.
//   - On an AUTO stream, PutRecord and PutRecords place every record on a random shard (a random
//     ExplicitHashKey replaces the producer's), accept records without PartitionKey, and PutRecord
//     rejects SequenceNumberForOrdering. Other streams' puts pass untouched.
//   - GetRecords answers omit the PartitionKey of records put without one. SubscribeToShard event
//     streams are forwarded as they come and keep the marker key (KeylessPartitionKeyPrefix):
//     only polling reads are rewritten.
//
// Everything else is forwarded unchanged, streaming. It listens on loopback only.
type AutoDistribution struct {
	target    *url.URL
	transport *http.Transport
	proxy     *httputil.ReverseProxy
	srv       *http.Server
	url       string
	served    <-chan struct{} // closed when Serve has returned

	mu       sync.Mutex
	auto     map[string]bool // by stream name; absent means USER_PARTITION_KEY
	closed   bool
	handlers sync.WaitGroup
}

// NewAutoDistribution starts a proxy to target (a plain-HTTP Kinesis endpoint such as
// Servers.KinesisEndpoint) and closes it when the test ends.
func NewAutoDistribution(t testing.TB, target string) *AutoDistribution {
	t.Helper()
	a, err := StartAutoDistribution(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

// StartAutoDistribution starts a proxy to target, for a program (a bench) that closes it itself.
func StartAutoDistribution(target string) (*AutoDistribution, error) {
	f, err := newFrontProxy("autodist", target)
	if err != nil {
		return nil, err
	}
	a := &AutoDistribution{target: f.target, transport: f.transport, proxy: f.proxy, url: f.url, auto: map[string]bool{}}
	a.proxy.ModifyResponse = a.rewriteAnswer
	a.srv = &http.Server{Handler: http.HandlerFunc(a.serve), ReadHeaderTimeout: readHeaderTimeout}
	a.served = f.serve(a.srv)
	return a, nil
}

// URL is the proxy's endpoint, for a client's BaseEndpoint.
func (a *AutoDistribution) URL() string { return a.url }

// SetStrategy sets stream (a name or an ARN) to AUTO or back to USER_PARTITION_KEY at once, as
// UpdateStreamRecordDistributionStrategy does, but without its on-demand check.
func (a *AutoDistribution) SetStrategy(stream string, auto bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if auto {
		a.auto[streamName(stream)] = true
	} else {
		delete(a.auto, streamName(stream))
	}
}

// Auto reports whether stream (a name or an ARN) is set to AUTO.
func (a *AutoDistribution) Auto(stream string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.auto[streamName(stream)]
}

// Close stops accepting, cuts open connections (subscriptions included) and waits for the
// handlers, so that no goroutine of the proxy outlives its test. Later calls do nothing more.
func (a *AutoDistribution) Close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	_ = a.srv.Close()
	<-a.served
	a.handlers.Wait()
	a.transport.CloseIdleConnections()
}

// enter counts a handler unless the proxy is closing: Add must not race with close's Wait.
func (a *AutoDistribution) enter() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	a.handlers.Add(1)
	return true
}

// ctxKey carries the stream a DeleteStream request names to its answer.
type ctxKey struct{}

func (a *AutoDistribution) serve(w http.ResponseWriter, r *http.Request) {
	if !a.enter() {
		http.Error(w, "localaws: autodist: closed", http.StatusServiceUnavailable)
		return
	}
	defer a.handlers.Done()
	switch op := operation(r.Header); op {
	case "UpdateStreamRecordDistributionStrategy":
		a.updateStrategy(w, r)
	case "PutRecord", "PutRecords", "DeleteStream":
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
		if err != nil {
			apiError("SerializationException", "localaws: autodist: read request: "+err.Error()).write(w)
			return
		}
		if op == "DeleteStream" {
			// Remembered for rewriteAnswer: a stream created again under the name starts afresh.
			r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, streamOf(body)))
		} else if body, err = a.place(op, body); err != nil {
			asAPIError(err).write(w)
			return
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		a.proxy.ServeHTTP(w, r)
	case "DescribeStreamSummary", "GetRecords":
		// rewriteAnswer needs these answers plain (kinesis-local compresses none today).
		r.Header.Del("Accept-Encoding")
		a.proxy.ServeHTTP(w, r)
	default:
		a.proxy.ServeHTTP(w, r)
	}
}

// place makes a put on an AUTO stream what AWS makes of it. Bodies it cannot parse go on
// unchanged, for kinesis-local to reject as it does.
func (a *AutoDistribution) place(op string, body []byte) ([]byte, error) {
	if !a.Auto(streamOf(body)) {
		return body, nil
	}
	field := "Records"
	if op == "PutRecord" {
		var in struct{ SequenceNumberForOrdering *string }
		if json.Unmarshal(body, &in) == nil && in.SequenceNumberForOrdering != nil {
			return nil, apiError("InvalidArgumentException",
				"SequenceNumberForOrdering is not supported on a stream whose record distribution strategy is AUTO")
		}
		field = ""
	}
	if placed, err := editJSON(body, field, placeRecord); err == nil {
		return placed, nil
	}
	return body, nil
}

// placeRecord sends rec to a random shard, whatever its keys: kinesis-local places by
// ExplicitHashKey when given one. A keyless record gets a marker key, which kinesis-local needs.
func placeRecord(rec map[string]json.RawMessage) {
	hash := new(big.Int).Lsh(new(big.Int).SetUint64(rand.Uint64()), 64)
	hash.Or(hash, new(big.Int).SetUint64(rand.Uint64()))
	rec["ExplicitHashKey"] = jsonString(hash.String())
	if v, ok := rec["PartitionKey"]; !ok || string(v) == "null" {
		rec["PartitionKey"] = jsonString(fmt.Sprintf("%s%016x", KeylessPartitionKeyPrefix, rand.Uint64()))
	}
}

// updateStrategy answers UpdateStreamRecordDistributionStrategy, which kinesis-local denies. Like
// AWS it takes the stream by StreamARN only and refuses AUTO on a provisioned stream.
func (a *AutoDistribution) updateStrategy(w http.ResponseWriter, r *http.Request) {
	var in struct{ StreamARN, RecordDistributionStrategy string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody)).Decode(&in); err != nil {
		apiError("SerializationException", "localaws: autodist: "+err.Error()).write(w)
		return
	}
	if in.StreamARN == "" {
		apiError("ValidationException", "StreamARN is required").write(w)
		return
	}
	if in.RecordDistributionStrategy != strategyAuto && in.RecordDistributionStrategy != strategyUserKey {
		apiError("ValidationException", fmt.Sprintf("RecordDistributionStrategy %q is not one of %s, %s",
			in.RecordDistributionStrategy, strategyAuto, strategyUserKey)).write(w)
		return
	}
	mode, err := a.streamMode(r, in.StreamARN)
	if err != nil {
		asAPIError(err).write(w)
		return
	}
	if in.RecordDistributionStrategy == strategyAuto && mode != streamModeOnDmd {
		apiError("InvalidArgumentException", "RecordDistributionStrategy AUTO needs an on-demand stream").write(w)
		return
	}
	a.SetStrategy(in.StreamARN, in.RecordDistributionStrategy == strategyAuto)
	w.Header().Set("Content-Type", jsonContentType)
	_, _ = io.WriteString(w, "{}")
}

// streamMode asks the target for the stream's capacity mode with the caller's signature headers
// (kinesis-local requires them). Its error answers, such as ResourceNotFoundException, are
// returned as an *answer to pass on.
func (a *AutoDistribution) streamMode(r *http.Request, arn string) (string, error) {
	body, _ := json.Marshal(map[string]string{"StreamARN": arn})
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, a.target.String(), bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("localaws: autodist: describe stream: %w", err)
	}
	for _, h := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.Header.Set("Content-Type", jsonContentType)
	req.Header.Set("X-Amz-Target", targetPrefix+"DescribeStreamSummary")
	resp, err := a.transport.RoundTrip(req)
	if err != nil {
		return "", fmt.Errorf("localaws: autodist: describe stream: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("localaws: autodist: describe stream: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", &answer{status: resp.StatusCode, body: b}
	}
	var out struct {
		StreamDescriptionSummary struct{ StreamModeDetails struct{ StreamMode string } }
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", fmt.Errorf("localaws: autodist: describe stream: %w", err)
	}
	return out.StreamDescriptionSummary.StreamModeDetails.StreamMode, nil
}

// rewriteAnswer completes kinesis-local's successful answers where AUTO changes them. Only
// these are read whole; every other answer streams through.
func (a *AutoDistribution) rewriteAnswer(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	var rewrite func([]byte) ([]byte, error)
	switch operation(resp.Request.Header) {
	case "DescribeStreamSummary":
		rewrite = a.addStrategy
	case "GetRecords":
		rewrite = stripKeylessKeys
	case "DeleteStream":
		if name, ok := resp.Request.Context().Value(ctxKey{}).(string); ok {
			a.SetStrategy(name, false)
		}
		return nil
	default:
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err == nil {
		body, err = rewrite(body)
	}
	if err != nil {
		return fmt.Errorf("localaws: autodist: rewrite %s answer: %w", operation(resp.Request.Header), err)
	}
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// addStrategy adds RecordDistributionStrategy to a DescribeStreamSummary answer; AWS reports it
// for on-demand streams only.
func (a *AutoDistribution) addStrategy(body []byte) ([]byte, error) {
	return editJSON(body, "StreamDescriptionSummary", func(sum map[string]json.RawMessage) {
		var name string
		var mode struct{ StreamMode string }
		_ = json.Unmarshal(sum["StreamName"], &name)
		_ = json.Unmarshal(sum["StreamModeDetails"], &mode)
		if mode.StreamMode != streamModeOnDmd {
			return
		}
		strategy := strategyUserKey
		if a.Auto(name) {
			strategy = strategyAuto
		}
		sum["RecordDistributionStrategy"] = jsonString(strategy)
	})
}

// stripKeylessKeys drops the marker keys from a GetRecords answer.
func stripKeylessKeys(body []byte) ([]byte, error) {
	// The marker cannot occur in base64 Data ('-' is not in its alphabet): without it in the
	// answer, no record has one, and the answer passes verbatim.
	if !bytes.Contains(body, []byte(KeylessPartitionKeyPrefix)) {
		return body, nil
	}
	return editJSON(body, "Records", func(rec map[string]json.RawMessage) {
		var key string
		if json.Unmarshal(rec["PartitionKey"], &key) == nil && strings.HasPrefix(key, KeylessPartitionKeyPrefix) {
			delete(rec, "PartitionKey")
		}
	})
}

// editJSON applies edit to the JSON object body or, given a field, to that field of it: an object
// or each object of a list. Members edit leaves alone keep their encoding (Data stays base64).
func editJSON(body []byte, field string, edit func(map[string]json.RawMessage)) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, err
	}
	var err error
	switch inner := bytes.TrimSpace(obj[field]); {
	case field == "":
		edit(obj)
	case len(inner) > 0 && inner[0] == '[':
		var list []json.RawMessage
		if err = json.Unmarshal(inner, &list); err != nil {
			return nil, err
		}
		for i := range list {
			if list[i], err = editJSON(list[i], "", edit); err != nil {
				return nil, err
			}
		}
		obj[field], err = json.Marshal(list)
	default:
		obj[field], err = editJSON(inner, "", edit)
	}
	if err != nil {
		return nil, err
	}
	return json.Marshal(obj)
}

// answer is a complete error answer in the Kinesis JSON format.
type answer struct {
	status int
	body   []byte
}

func (e *answer) Error() string { return string(e.body) }

func (e *answer) write(w http.ResponseWriter) {
	w.Header().Set("Content-Type", jsonContentType)
	w.WriteHeader(e.status)
	_, _ = w.Write(e.body) //nolint:gosec // G705: a JSON answer to an SDK client, not a page
}

func apiError(typ, msg string) *answer {
	body, _ := json.Marshal(map[string]string{"__type": typ, "message": msg})
	return &answer{status: http.StatusBadRequest, body: body}
}

// asAPIError passes an upstream answer on and reports anything else as a server fault.
func asAPIError(err error) *answer {
	if a, ok := errors.AsType[*answer](err); ok {
		return a
	}
	a := apiError("InternalFailure", err.Error())
	a.status = http.StatusInternalServerError
	return a
}

func operation(h http.Header) string {
	target := h.Get("X-Amz-Target") // Kinesis_20131202.PutRecord, DynamoDB_20120810.Scan
	return target[strings.LastIndexByte(target, '.')+1:]
}

// streamOf returns the stream a request names, by StreamName or StreamARN.
func streamOf(body []byte) string {
	var req struct{ StreamName, StreamARN string }
	_ = json.Unmarshal(body, &req)
	if req.StreamName != "" {
		return req.StreamName
	}
	return streamName(req.StreamARN)
}

// streamName returns the name in a stream ARN (arn:aws:kinesis:<region>:<account>:stream/<name>),
// or s itself if it is none.
func streamName(s string) string {
	if i := strings.LastIndex(s, "stream/"); i >= 0 {
		return s[i+len("stream/"):]
	}
	return s
}

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}
