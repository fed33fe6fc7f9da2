package kinesis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go/eventstream"
)

// fanoutFixClient is a test-only HTTP client for the SDK clients of a binding on kinesis-local. That
// server never sends the `initial-response` event with which AWS opens every SubscribeToShard event
// stream, and aws-sdk-go-v2 fails the call without it (shared/TESTING-ENV.md); this client prepends
// the event to every 200 SubscribeToShard response. Real AWS sends the event itself.
//
// It is set through the binding's unexported sdkHTTPClient field before Init, so no component
// metadata can switch it on. For the tests it also counts calls, can cut every open subscription's
// connection (a network fault), cut the binding off the network for good (a dead replica), and
// answer SubscribeToShard itself (a fake for what kinesis-local cannot do).
type fanoutFixClient struct {
	next aws.HTTPClient // everything but SubscribeToShard
	subs *http.Client   // SubscribeToShard only: a connection per subscription, so cuts hit only those

	// subscribe, if set, may answer a SubscribeToShard call instead of kinesis-local (nil: forward).
	subscribe func(req *http.Request) *http.Response

	dead atomic.Bool

	mu    sync.Mutex
	calls map[string]int
	conns map[net.Conn]struct{}
}

var errDeadReplica = errors.New("test: this replica is dead")

// withFanoutFix is the configuration a binding of mode needs on kinesis-local: the fan-out fix
// client in extended mode, nothing in shared mode.
func withFanoutFix(mode consumerMode) []func(*AWSKinesis) {
	if mode != modeExtended {
		return nil
	}
	return []func(*AWSKinesis){func(a *AWSKinesis) { a.sdkHTTPClient = newFanoutFixClient() }}
}

func newFanoutFixClient() *fanoutFixClient {
	c := &fanoutFixClient{next: awshttp.NewBuildableClient(), calls: map[string]int{}, conns: map[net.Conn]struct{}{}}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// kinesis-local answers HTTP/2 in ~48 ms and HTTP/1.1 in a few; a subscription holds its
	// connection until it ends, so there is nothing to pool.
	tr.ForceAttemptHTTP2 = false
	tr.DisableKeepAlives = true
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.conns[conn] = struct{}{}
		c.mu.Unlock()
		return &trackedConn{Conn: conn, forget: func() { c.forget(conn) }}, nil
	}
	c.subs = &http.Client{Transport: tr}
	return c
}

func (c *fanoutFixClient) Do(req *http.Request) (*http.Response, error) {
	op := req.Header.Get("X-Amz-Target")
	if i := strings.LastIndexByte(op, '.'); i >= 0 {
		op = op[i+1:]
	}
	c.mu.Lock()
	c.calls[op]++
	c.mu.Unlock()
	if c.dead.Load() {
		return nil, errDeadReplica
	}
	if op != "SubscribeToShard" {
		return c.next.Do(req)
	}

	var resp *http.Response
	if c.subscribe != nil {
		resp = c.subscribe(req)
	}
	if resp == nil {
		var err error
		if resp, err = c.subs.Do(req); err != nil {
			return nil, err
		}
	}
	if resp.StatusCode == http.StatusOK {
		resp.Body = &prefixedBody{Reader: io.MultiReader(bytes.NewReader(initialResponseFrame), resp.Body), Closer: resp.Body}
		resp.ContentLength = -1
	}
	return resp, nil
}

// count returns how many calls of the operation were made.
func (c *fanoutFixClient) count(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[op]
}

// openSubscriptions returns how many subscription connections are open.
func (c *fanoutFixClient) openSubscriptions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// dropSubscriptions closes the connection under every open subscription, as a network fault
// would, and returns how many it cut.
func (c *fanoutFixClient) dropSubscriptions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for conn := range c.conns {
		_ = conn.Close()
	}
	n := len(c.conns)
	clear(c.conns)
	return n
}

// kill makes the replica behind this client dead to the world: its subscriptions are cut and
// every later request fails, so it renews no lease and writes no checkpoint; it releases nothing
// either, as a killed process would not.
func (c *fanoutFixClient) kill() {
	c.dead.Store(true)
	c.dropSubscriptions()
}

func (c *fanoutFixClient) forget(conn net.Conn) {
	c.mu.Lock()
	delete(c.conns, conn)
	c.mu.Unlock()
}

// eventFrame encodes an event stream message as AWS sends it.
func eventFrame(eventType string, payload []byte) []byte {
	var buf bytes.Buffer
	msg := eventstream.Message{
		Headers: eventstream.Headers{
			{Name: ":message-type", Value: eventstream.StringValue("event")},
			{Name: ":event-type", Value: eventstream.StringValue(eventType)},
			{Name: ":content-type", Value: eventstream.StringValue("application/json")},
		},
		Payload: payload,
	}
	if err := eventstream.NewEncoder().Encode(&buf, msg); err != nil {
		panic(fmt.Sprintf("encode event frame: %v", err))
	}
	return buf.Bytes()
}

// initialResponseFrame is the event AWS sends first on every SubscribeToShard stream.
var initialResponseFrame = eventFrame("initial-response", []byte("{}"))

type prefixedBody struct {
	io.Reader
	io.Closer
}

type trackedConn struct {
	net.Conn
	once   sync.Once
	forget func()
}

func (c *trackedConn) Close() error {
	c.once.Do(c.forget)
	err := c.Conn.Close()
	if errors.Is(err, net.ErrClosed) { // already cut by dropSubscriptions
		return nil
	}
	return err
}
