// Package faultproxy is a TCP proxy for tests that stands between a client and a local server and
// injects the network faults a real deployment meets: added latency, connections cut in the middle
// of a request or a stream, and a server that refuses or silently drops new connections for a
// while. It knows nothing of HTTP, so a cut lands wherever the bytes happen to be.
package faultproxy

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// dialTimeout bounds the connection to the target; a target that is down answers at once on loopback.
const dialTimeout = 5 * time.Second

// mode is what the proxy does with new connections.
type mode int

const (
	modePass      mode = iota // forward
	modeRefuse                // reset each new connection at once, as a server that is down
	modeBlackhole             // hold new connections and freeze traffic, as a network partition
)

// Proxy forwards TCP connections from a loopback port to a target address.
type Proxy struct {
	target string
	scheme string
	ln     net.Listener

	mu      sync.Mutex
	mode    mode
	latency time.Duration
	thawed  chan struct{} // closed unless black-holed; frozen traffic waits on it
	links   map[*link]struct{}
	closed  bool

	wg sync.WaitGroup // the accept loop and every link's goroutines

	accepted, cut, refused atomic.Int64
}

// Stats counts what the proxy did since it started.
type Stats struct {
	Accepted int64 // connections accepted from clients
	Cut      int64 // connections cut by CutAll or Refuse
	Refused  int64 // connections reset on arrival while refusing, or because the target was down
	Active   int   // connections open now
}

// New listens on a free loopback port and forwards to target, given as host:port or as a URL
// (http://127.0.0.1:4567), whose scheme URL then repeats.
func New(target string) (*Proxy, error) {
	scheme := ""
	if u, err := url.Parse(target); err == nil && u.Host != "" {
		scheme, target = u.Scheme, u.Host
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("faultproxy: target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{
		target: target,
		scheme: scheme,
		ln:     ln,
		thawed: make(chan struct{}),
		links:  map[*link]struct{}{},
	}
	close(p.thawed)
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's address with the target's scheme (http when the target had none), the
// value to give a client as its endpoint.
func (p *Proxy) URL() string {
	scheme := p.scheme
	if scheme == "" {
		scheme = "http"
	}
	return scheme + "://" + p.Addr()
}

// SetLatency delays every chunk of data, in each direction, by d from the moment the proxy read
// it. Data keeps its order and pipelining, as on a long link; 0 removes the delay.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = max(d, 0)
}

// CutAll cuts every open connection now, whatever it was doing, and returns how many it cut: the
// client sees a reset, the server a close. New connections are still forwarded.
func (p *Proxy) CutAll() int {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.reset()
	}
	p.cut.Add(int64(len(links)))
	return len(links)
}

// Refuse cuts every open connection and resets each new one on arrival, as a server that is down
// would, until Resume.
func (p *Proxy) Refuse() {
	p.setMode(modeRefuse)
	p.CutAll()
}

// Blackhole freezes the traffic of open connections and holds new ones without connecting them,
// as a network partition would: clients see nothing but their own timeouts. Resume delivers what
// was held, as TCP does once a partition heals, including requests whose clients gave up waiting.
func (p *Proxy) Blackhole() { p.setMode(modeBlackhole) }

// Resume forwards again after Refuse or Blackhole.
func (p *Proxy) Resume() { p.setMode(modePass) }

func (p *Proxy) setMode(m mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m == modeBlackhole && p.mode != modeBlackhole {
		p.thawed = make(chan struct{})
	}
	if m != modeBlackhole && p.mode == modeBlackhole {
		close(p.thawed)
	}
	p.mode = m
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	active := len(p.links)
	p.mu.Unlock()
	return Stats{Accepted: p.accepted.Load(), Cut: p.cut.Load(), Refused: p.refused.Load(), Active: active}
}

// Close stops listening, resets every connection and waits for the proxy's goroutines to end.
// Calling it again does nothing.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	if p.mode == modeBlackhole {
		close(p.thawed) // releases held goroutines; they find the proxy closed
		p.mode = modePass
	}
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()

	err := p.ln.Close()
	for _, l := range links {
		l.reset()
	}
	p.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("faultproxy: close: %w", err)
	}
	return nil
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed; a loopback listener has no other lasting error
		}
		p.accepted.Add(1)
		l := newLink(c.(*net.TCPConn))
		if !p.register(l) {
			l.reset()
			continue
		}
		p.wg.Add(1)
		go p.serve(l)
	}
}

// register tracks l unless the proxy is closed or refusing.
func (p *Proxy) register(l *link) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if p.mode == modeRefuse {
		p.refused.Add(1)
		return false
	}
	p.links[l] = struct{}{}
	return true
}

func (p *Proxy) unregister(l *link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.links, l)
}

// snapshot returns what the forwarding goroutines need, read under the lock.
func (p *Proxy) snapshot() (latency time.Duration, thawed <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latency, p.thawed
}

// serve connects l to the target, once the proxy is not black-holed, and forwards both ways.
func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer p.unregister(l)
	defer l.close()

	if !l.wait(p) {
		return
	}
	d := net.Dialer{Timeout: dialTimeout}
	sc, err := d.Dial("tcp", p.target)
	if err != nil {
		// The target is down (a server restarting): the client sees its connection reset.
		p.refused.Add(1)
		l.reset()
		return
	}
	if !l.attach(sc.(*net.TCPConn)) {
		return
	}

	var dirs sync.WaitGroup
	dirs.Add(2)
	go func() { defer dirs.Done(); p.forward(l, l.server, l.client) }()
	go func() { defer dirs.Done(); p.forward(l, l.client, l.server) }()
	dirs.Wait()
}
