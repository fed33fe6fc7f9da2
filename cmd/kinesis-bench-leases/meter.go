package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/leases"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

// heartbeatSuffix marks, in a replicaMeter's reading, the operations on the heartbeat item.
const heartbeatSuffix = "/heartbeat"

// maxRequestBody bounds what the router reads of a request: DynamoDB's own limit.
const maxRequestBody = 16 << 20

// replicaMeter is one replica's DynamoDB meters: one for the requests on the heartbeat item
// (leases.HeartbeatKey) and one for the rest, with a router in front that sends each request to
// its meter. localaws's meter counts by operation only, and a heartbeat is an UpdateItem or a
// GetItem as a lease's renewal or read is; two meters tell them apart without changing it.
type replicaMeter struct {
	lease, heartbeat     *localaws.DynamoDBMeter
	toLease, toHeartbeat *httputil.ReverseProxy
	transport            *http.Transport
	srv                  *http.Server
	url                  string
	served               chan struct{}
}

// startReplicaMeter starts the meters in front of target (dynalite) and the router in front of them.
func startReplicaMeter(target string) (*replicaMeter, error) {
	m := &replicaMeter{served: make(chan struct{})}
	var err error
	if m.lease, err = localaws.StartDynamoDBMeter(target); err != nil {
		return nil, fmt.Errorf("lease meter: %w", err)
	}
	if m.heartbeat, err = localaws.StartDynamoDBMeter(target); err != nil {
		m.lease.Close()
		return nil, fmt.Errorf("heartbeat meter: %w", err)
	}
	if err = m.listen(); err != nil {
		m.lease.Close()
		m.heartbeat.Close()
		return nil, err
	}
	return m, nil
}

func (m *replicaMeter) listen() error {
	// A transport of the router's own that keeps as many connections as the replica opens: the
	// default keeps 2 per host, and a replica's lease steps run in parallel.
	tr := http.DefaultTransport.(*http.Transport).Clone() //nolint:forcetypeassert // the standard library's
	tr.MaxIdleConnsPerHost = 64
	m.transport = tr
	var err error
	if m.toLease, err = proxyTo(m.lease.URL(), tr); err != nil {
		return err
	}
	if m.toHeartbeat, err = proxyTo(m.heartbeat.URL(), tr); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("meter router: %w", err)
	}
	m.url = "http://" + ln.Addr().String()
	m.srv = &http.Server{Handler: http.HandlerFunc(m.route), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(m.served)
		_ = m.srv.Serve(ln) // ErrServerClosed once Close is called
	}()
	return nil
}

// proxyTo is a reverse proxy to a meter. It answers 502 when the meter cannot be reached, without
// logging: a replica's Close cancels its requests in flight, and each would be logged otherwise.
func proxyTo(raw string, tr http.RoundTripper) (*httputil.ReverseProxy, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("meter URL %q: %w", raw, err)
	}
	return &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		Transport: tr,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, "kinesis-bench-leases: meter router: "+err.Error(), http.StatusBadGateway)
		},
	}, nil
}

// URL is the router's endpoint, for the replica's dynamoDBEndpoint.
func (m *replicaMeter) URL() string { return m.url }

// Close stops the router, then the meters.
func (m *replicaMeter) Close() {
	_ = m.srv.Close()
	<-m.served
	m.transport.CloseIdleConnections()
	m.lease.Close()
	m.heartbeat.Close()
}

// Reading is what was used so far: the lease meter's operations under their names, the heartbeat
// meter's with heartbeatSuffix.
func (m *replicaMeter) Reading() localaws.Usage {
	out := m.lease.Reading()
	for op, u := range m.heartbeat.Reading() {
		out[op+heartbeatSuffix] = u
	}
	return out
}

// route sends a request on the heartbeat item to the heartbeat meter and any other to the lease
// meter. The body is read to look at its Key, then handed on unchanged.
func (m *replicaMeter) route(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err == nil && len(body) > maxRequestBody {
		err = errors.New("request body over 16 MiB")
	}
	if err != nil {
		http.Error(w, "kinesis-bench-leases: meter router: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if onHeartbeatItem(body) {
		m.toHeartbeat.ServeHTTP(w, r)
		return
	}
	m.toLease.ServeHTTP(w, r)
}

// onHeartbeatItem reports whether a request's Key (GetItem, UpdateItem, PutItem, DeleteItem) is the
// heartbeat item's. A Scan has no Key: it reads the heartbeat item with the leases and is counted
// with them, as the table's other reads.
func onHeartbeatItem(body []byte) bool {
	var req struct {
		Key map[string]struct{ S string }
	}
	return json.Unmarshal(body, &req) == nil && req.Key[leases.AttrShardID].S == leases.HeartbeatKey
}
