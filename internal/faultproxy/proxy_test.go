package faultproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dapr-kinesis/kinesis/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes each connection until the client half-closes, then closes its side.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().String()
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// newHTTPClient returns a client with its own pool, closed when the test ends.
func newHTTPClient(t *testing.T, timeout time.Duration) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: timeout}
}

func TestForwardsBothWaysAndPassesHalfClose(t *testing.T) {
	t.Parallel()
	p := newProxy(t, echoServer(t))

	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	payload := strings.Repeat("0123456789", 20_000) // several reads' worth
	go func() {
		_, _ = io.WriteString(c, payload)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	require.NoError(t, err, "the echo server's close arrives as a clean end of stream")
	assert.Equal(t, payload, string(got))
	assert.Equal(t, int64(1), p.Stats().Accepted)
}

func TestURLKeepsTheTargetScheme(t *testing.T) {
	t.Parallel()
	p := newProxy(t, "http://"+echoServer(t))
	assert.Equal(t, "http://"+p.Addr(), p.URL())
	assert.True(t, strings.HasPrefix(p.Addr(), "127.0.0.1:"))

	_, err := New("no port")
	require.Error(t, err)
}

func TestLatencyDelaysEachDirection(t *testing.T) {
	t.Parallel()
	p := newProxy(t, echoServer(t))
	const latency = 100 * time.Millisecond
	p.SetLatency(latency)

	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	for range 3 {
		began := time.Now()
		_, err = io.WriteString(c, "ping\n")
		require.NoError(t, err)
		line, readErr := r.ReadString('\n')
		require.NoError(t, readErr)
		assert.Equal(t, "ping\n", line)
		// A lower bound only: the delay is added in both directions; the machine may add more.
		assert.GreaterOrEqual(t, time.Since(began), 2*latency)
	}

	p.SetLatency(0)
	_, err = io.WriteString(c, "fast\n")
	require.NoError(t, err)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "fast\n", line)
}

// TestCutAllInterruptsARequestInFlight cuts while the server is still answering: the client must
// see an error, never a clean but short response, and the server must see its connection go.
func TestCutAllInterruptsARequestInFlight(t *testing.T) {
	t.Parallel()
	inHandler := make(chan struct{})
	var serverSawCut atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			return
		}
		w.Header().Set("Content-Length", "1000000")
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		close(inHandler)
		<-r.Context().Done()
		serverSawCut.Store(true)
	}))
	defer srv.Close()
	p := newProxy(t, srv.URL)

	client := newHTTPClient(t, 10*time.Second)
	resp, err := client.Get(p.URL() + "/slow")
	require.NoError(t, err, "headers arrive before the cut")
	defer resp.Body.Close()
	<-inHandler
	assert.Equal(t, 1, p.CutAll())

	_, err = io.ReadAll(resp.Body)
	require.Error(t, err, "a cut body must not look complete")
	testwait.Eventually(t, serverSawCut.Load, 5*time.Second, 10*time.Millisecond)
	st := p.Stats()
	assert.Equal(t, int64(1), st.Cut)
	testwait.Eventually(t, func() bool { return p.Stats().Active == 0 }, 5*time.Second, 10*time.Millisecond)

	resp, err = client.Get(p.URL())
	require.NoError(t, err, "new connections are forwarded after a cut")
	resp.Body.Close()
}

// TestCutAllClosesTheServerSideGently: a cut resets the client but only closes the server's
// connection (kinesis-local stops accepting after a few resets).
func TestCutAllClosesTheServerSideGently(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	serverErr := make(chan error, 1)
	go func() {
		c, acceptErr := ln.Accept()
		if acceptErr != nil {
			serverErr <- acceptErr
			return
		}
		defer c.Close()
		_, copyErr := io.Copy(io.Discard, c) // until the proxy's close
		serverErr <- copyErr
	}()
	p := newProxy(t, ln.Addr().String())
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "half a request")
	require.NoError(t, err)
	testwait.Eventually(t, func() bool { return p.Stats().Active == 1 }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond) // the server side is connected

	assert.Equal(t, 1, p.CutAll())
	assert.NoError(t, <-serverErr, "the server sees a plain end of stream")
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, syscall.ECONNRESET, "the client sees a reset")
}

func TestRefuseResetsNewConnectionsUntilResume(t *testing.T) {
	t.Parallel()
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { served.Add(1) }))
	defer srv.Close()
	p := newProxy(t, srv.URL)
	client := newHTTPClient(t, 5*time.Second)

	resp, err := client.Get(p.URL())
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 1, p.Stats().Active, "an idle keep-alive connection")

	p.Refuse()
	assert.Equal(t, int64(1), p.Stats().Cut, "open connections are cut as well")
	for range 3 {
		resp, err = client.Get(p.URL())
		if err == nil {
			resp.Body.Close()
		}
		require.Error(t, err)
		assert.True(t, isConnectionFailure(err), "%v", err)
	}
	assert.Equal(t, int64(1), served.Load(), "nothing reached the server")
	assert.GreaterOrEqual(t, p.Stats().Refused, int64(3))

	p.Resume()
	resp, err = client.Get(p.URL())
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, int64(2), served.Load())
}

// TestBlackholeHoldsTrafficUntilResume: a client with a timeout gives up; one without it gets its
// answer once the partition heals. The request of the one that gave up still reaches the server
// after the partition, as on a real network: "timed out" never meant "not done".
func TestBlackholeHoldsTrafficUntilResume(t *testing.T) {
	t.Parallel()
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		served.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	p := newProxy(t, srv.URL)

	p.Blackhole()
	resp, err := newHTTPClient(t, 300*time.Millisecond).Get(p.URL())
	if err == nil {
		resp.Body.Close()
	}
	require.Error(t, err)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout(), "a partition looks like a timeout: %v", err)

	patient := make(chan error, 1)
	go func() {
		resp, err := newHTTPClient(t, 10*time.Second).Get(p.URL())
		if err == nil {
			var body []byte
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && string(body) != "ok" {
				err = errors.New("body " + string(body))
			}
		}
		patient <- err
	}()
	testwait.Eventually(t, func() bool { return p.Stats().Accepted == 2 }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	assert.Zero(t, served.Load(), "nothing reaches the server while black-holed")

	p.Resume()
	require.NoError(t, <-patient)
	testwait.Eventually(t, func() bool { return served.Load() == 2 }, 5*time.Second, 5*time.Millisecond,
		"both requests, the abandoned one too, are delivered after the partition heals")
}

func TestBlackholeFreezesOpenConnections(t *testing.T) {
	t.Parallel()
	p := newProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	_, err = io.WriteString(c, "before\n")
	require.NoError(t, err)
	_, err = r.ReadString('\n')
	require.NoError(t, err)

	p.Blackhole()
	_, err = io.WriteString(c, "during\n")
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(300*time.Millisecond)))
	_, err = r.ReadString('\n')
	require.Error(t, err, "no echo while frozen")

	p.Resume()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "during\n", line, "held data is delivered after the partition heals")
}

func TestTargetDownResetsTheClient(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	target := ln.Addr().String()
	require.NoError(t, ln.Close())
	p := newProxy(t, target)

	c, err := net.Dial("tcp", p.Addr())
	if err == nil { // the reset may come before or after the connect returns
		defer c.Close()
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err = c.Read(make([]byte, 1))
	}
	require.Error(t, err)
	assert.True(t, isConnectionFailure(err), "%v", err)
	testwait.Eventually(t, func() bool { return p.Stats().Refused == 1 }, 5*time.Second, 5*time.Millisecond)
}

func TestCloseEndsEverything(t *testing.T) {
	t.Parallel()
	p, err := New(echoServer(t))
	require.NoError(t, err)
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	p.Blackhole() // a held goroutine must not keep Close waiting
	c2, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c2.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err = <-closed:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("Close hangs")
	}
	require.NoError(t, p.Close(), "second Close")
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err)
	_, err = net.Dial("tcp", p.Addr())
	require.Error(t, err, "no longer listening")
}

// isConnectionFailure tells a reset or refused connection (or its EOF, depending on timing) from
// other errors.
func isConnectionFailure(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.EPIPE)
}
