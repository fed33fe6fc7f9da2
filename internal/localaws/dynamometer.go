package localaws

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"testing"
)

// consistentHeader marks, on the forwarded request, a consistent Scan or Query; labelHeader carries
// the request's label (MeterLabel) to the count of its answer.
const (
	consistentHeader = "X-Localaws-Consistent-Read"
	labelHeader      = "X-Localaws-Meter-Label"
)

// Prices of DynamoDB on-demand capacity (us-east-1, per million request units), which the meter's
// cost figures use.
const (
	PricePerMillionReadUnits  = 0.125
	PricePerMillionWriteUnits = 0.625
)

// DynamoDBMeter is an HTTP proxy in front of dynalite that counts what a client's DynamoDB requests
// would cost on AWS: calls, items and bytes by operation, and the read and write units AWS would
// charge. dynalite computes the units by AWS's rules (4 KB a read unit, halved for an eventually
// consistent read, a scan's items summed before rounding; 1 KB a write unit, the larger of the item
// before and after) when a request asks for ReturnConsumedCapacity: the meter asks for it on every
// request that does not, and reads the answer. One correction: dynalite 4.0.0 ignores ConsistentRead
// on Scan and Query and always halves, so the meter doubles the units of a consistent one. Give
// each replica a meter of its own to see its share.
type DynamoDBMeter struct {
	srv    *http.Server
	url    string
	proxy  *httputil.ReverseProxy
	served <-chan struct{}
	label  func(req map[string]json.RawMessage) string

	mu  sync.Mutex
	ops map[string]*OpUsage
}

// OpUsage is what the requests of one operation used.
type OpUsage struct {
	Calls                 int
	Items                 int // items read (a scan's ScannedCount) or written
	BytesSent, BytesIn    int // request and response bodies
	ReadUnits, WriteUnits float64
}

// Usage is a meter's reading: by operation, and the total.
type Usage map[string]OpUsage

// Total sums the operations.
func (u Usage) Total() OpUsage {
	var t OpUsage
	for _, o := range u {
		t.Calls += o.Calls
		t.Items += o.Items
		t.BytesSent += o.BytesSent
		t.BytesIn += o.BytesIn
		t.ReadUnits += o.ReadUnits
		t.WriteUnits += o.WriteUnits
	}
	return t
}

// Plus is what both used, by operation.
func (u Usage) Plus(other Usage) Usage {
	out := Usage{}
	for _, from := range []Usage{u, other} {
		for op, o := range from {
			t := out[op]
			out[op] = OpUsage{
				Calls: t.Calls + o.Calls, Items: t.Items + o.Items, BytesSent: t.BytesSent + o.BytesSent, BytesIn: t.BytesIn + o.BytesIn,
				ReadUnits: t.ReadUnits + o.ReadUnits, WriteUnits: t.WriteUnits + o.WriteUnits,
			}
		}
	}
	return out
}

// Since is what was used after the earlier reading.
func (u Usage) Since(earlier Usage) Usage {
	out := Usage{}
	for op, o := range u {
		e := earlier[op]
		out[op] = OpUsage{
			Calls: o.Calls - e.Calls, Items: o.Items - e.Items, BytesSent: o.BytesSent - e.BytesSent, BytesIn: o.BytesIn - e.BytesIn,
			ReadUnits: o.ReadUnits - e.ReadUnits, WriteUnits: o.WriteUnits - e.WriteUnits,
		}
	}
	return out
}

// MeterOption sets up a DynamoDBMeter.
type MeterOption func(*DynamoDBMeter)

// MeterLabel counts each request whose decoded body label names (not "") under its operation and
// the label: "UpdateItem/heartbeat" apart from "UpdateItem".
func MeterLabel(label func(req map[string]json.RawMessage) string) MeterOption {
	return func(m *DynamoDBMeter) { m.label = label }
}

// NewDynamoDBMeter starts a meter in front of target (Servers.DynamoDBEndpoint), closed when the
// test ends.
func NewDynamoDBMeter(t testing.TB, target string, opts ...MeterOption) *DynamoDBMeter {
	t.Helper()
	m, err := StartDynamoDBMeter(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// StartDynamoDBMeter starts a meter in front of target, for a program (a bench) that closes it.
func StartDynamoDBMeter(target string, opts ...MeterOption) (*DynamoDBMeter, error) {
	f, err := newFrontProxy("dynamodb meter", target)
	if err != nil {
		return nil, err
	}
	m := &DynamoDBMeter{url: f.url, proxy: f.proxy, ops: map[string]*OpUsage{}}
	for _, o := range opts {
		o(m)
	}
	m.proxy.ModifyResponse = m.count
	m.srv = &http.Server{Handler: http.HandlerFunc(m.serve), ReadHeaderTimeout: readHeaderTimeout}
	m.served = f.serve(m.srv)
	return m, nil
}

// URL is the meter's endpoint, for a client's BaseEndpoint (the binding's dynamoDBEndpoint).
func (m *DynamoDBMeter) URL() string { return m.url }

// Close stops the meter; later calls do nothing.
func (m *DynamoDBMeter) Close() {
	_ = m.srv.Close()
	<-m.served
}

// Reading returns what was used so far.
func (m *DynamoDBMeter) Reading() Usage {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := Usage{}
	for op, o := range m.ops {
		out[op] = *o
	}
	return out
}

// serve asks for the consumed capacity in the request, then forwards it.
func (m *DynamoDBMeter) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
	if err != nil {
		http.Error(w, "localaws: dynamodb meter: "+err.Error(), http.StatusBadRequest)
		return
	}
	op := operation(r.Header)
	var req map[string]json.RawMessage
	if json.Unmarshal(body, &req) == nil {
		if (op == "Scan" || op == "Query") && string(req["ConsistentRead"]) == "true" {
			r.Header.Set(consistentHeader, "true")
		}
		if m.label != nil {
			if label := m.label(req); label != "" {
				r.Header.Set(labelHeader, label)
			}
		}
		if _, asked := req["ReturnConsumedCapacity"]; !asked {
			req["ReturnConsumedCapacity"] = json.RawMessage(`"TOTAL"`)
			if rewritten, merr := json.Marshal(req); merr == nil {
				body = rewritten
			}
		}
	}
	m.mu.Lock()
	u := m.usage(usageKey(r))
	u.Calls++
	u.BytesSent += len(body)
	m.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	m.proxy.ServeHTTP(w, r)
}

// usageKey is what a request's use is counted under: its operation, and its label if it has one.
func usageKey(r *http.Request) string {
	if label := r.Header.Get(labelHeader); label != "" {
		return operation(r.Header) + "/" + label
	}
	return operation(r.Header)
}

// count reads the units and items of an answer. The signature the client computed covers the body
// it sent, not the one forwarded: dynalite does not check signatures.
func (m *DynamoDBMeter) count(resp *http.Response) error {
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return fmt.Errorf("localaws: dynamodb meter: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	op, key := operation(resp.Request.Header), usageKey(resp.Request)
	var out struct {
		ConsumedCapacity *struct{ CapacityUnits float64 }
		ScannedCount     *int
		Count            *int
		Item             map[string]json.RawMessage
	}
	_ = json.Unmarshal(body, &out)
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.usage(key)
	u.BytesIn += len(body)
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	units := 0.0
	if out.ConsumedCapacity != nil {
		units = out.ConsumedCapacity.CapacityUnits
	}
	if resp.Request.Header.Get(consistentHeader) != "" {
		units *= 2 // see DynamoDBMeter
	}
	switch op {
	case "Scan", "Query", "GetItem", "BatchGetItem":
		u.ReadUnits += units
		switch {
		case out.ScannedCount != nil:
			u.Items += *out.ScannedCount
		case out.Item != nil:
			u.Items++
		}
	case "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem":
		u.WriteUnits += units
		u.Items++
	}
	return nil
}

func (m *DynamoDBMeter) usage(op string) *OpUsage {
	u := m.ops[op]
	if u == nil {
		u = &OpUsage{}
		m.ops[op] = u
	}
	return u
}
