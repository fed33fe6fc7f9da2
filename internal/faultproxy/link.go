package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

const (
	readSize = 32 << 10
	// chunkQueue bounds what one direction holds while delayed or frozen; past it the reader stops
	// and TCP flow control pushes back on the sender, as a slow link does.
	chunkQueue = 64
)

// link is one client connection and, once connected, its connection to the target.
type link struct {
	client *net.TCPConn

	mu     sync.Mutex
	server *net.TCPConn

	done     chan struct{} // closed when the link is reset or closed
	doneOnce sync.Once
}

func newLink(c *net.TCPConn) *link {
	return &link{client: c, done: make(chan struct{})}
}

// attach adds the target connection unless the link was cut while it dialled.
func (l *link) attach(sc *net.TCPConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		_ = sc.Close() // gently, see reset
		return false
	default:
	}
	l.server = sc
	return true
}

// wait blocks while the proxy is black-holed; false means the link was cut meanwhile.
func (l *link) wait(p *Proxy) bool {
	_, thawed := p.snapshot()
	select {
	case <-thawed:
		return true
	case <-l.done:
		return false
	}
}

// reset cuts the link. The client gets a TCP RST, so that it sees "connection reset" rather than
// a clean end of stream it could mistake for a complete response. The server gets a plain close:
// kinesis-local 0.6.2 stops accepting connections for good, while its process keeps running,
// after about ten connections reset before it answered (measured here), which would take the
// emulator down for every other test sharing it. To the server a close mid-request is as much a
// cut as a reset.
func (l *link) reset() {
	l.doneOnce.Do(func() { close(l.done) })
	l.mu.Lock()
	sc := l.server
	l.mu.Unlock()
	if sc != nil {
		_ = sc.Close()
	}
	abort(l.client)
}

// close ends a link whose both directions finished normally.
func (l *link) close() {
	l.doneOnce.Do(func() { close(l.done) })
	l.mu.Lock()
	sc := l.server
	l.mu.Unlock()
	_ = l.client.Close()
	if sc != nil {
		_ = sc.Close()
	}
}

func abort(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

type chunk struct {
	data []byte
	due  time.Time
}

// forward copies src to dst through a queue, so that added latency delays data without throttling
// it. A clean end of stream is passed on as a half-close; any other failure cuts the whole link,
// as the far side would see it.
func (p *Proxy) forward(l *link, dst, src *net.TCPConn) {
	chunks := make(chan chunk, chunkQueue)
	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		p.write(l, dst, chunks)
	}()
	defer writer.Wait()
	defer close(chunks)

	for {
		buf := make([]byte, readSize)
		n, err := src.Read(buf)
		if n > 0 {
			latency, _ := p.snapshot()
			select {
			case chunks <- chunk{data: buf[:n], due: time.Now().Add(latency)}:
			case <-l.done:
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				l.reset()
			}
			return
		}
	}
}

func (p *Proxy) write(l *link, dst *net.TCPConn, chunks <-chan chunk) {
	for c := range chunks {
		if !sleepUntil(c.due, l.done) || !l.wait(p) {
			return
		}
		if _, err := dst.Write(c.data); err != nil {
			l.reset()
			return
		}
	}
	_ = dst.CloseWrite()
}

// sleepUntil waits for t; false means done closed first.
func sleepUntil(t time.Time, done <-chan struct{}) bool {
	d := time.Until(t)
	if d <= 0 {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-done:
		return false
	}
}
