package localaws

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
)

// frontProxy is what the test bed's servers in front of an emulator share (AutoDistribution,
// QueueServer, DynamoDBMeter): a loopback listener, and a reverse proxy to the emulator that
// streams (event streams last minutes) over HTTP/1.1 (see newHTTPClient), answering 502 with name
// when the emulator cannot be reached.
type frontProxy struct {
	listener  net.Listener
	url       string
	target    *url.URL
	transport *http.Transport
	proxy     *httputil.ReverseProxy
}

func newFrontProxy(name, target string) (*frontProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("localaws: %s: target: %w", name, err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("localaws: %s: target %q is not a plain http URL", name, target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("localaws: %s: listen: %w", name, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone() //nolint:forcetypeassert // the standard library's
	tr.ForceAttemptHTTP2 = false
	tr.MaxIdleConnsPerHost = 64
	return &frontProxy{
		listener: ln, url: "http://" + ln.Addr().String(), target: u, transport: tr,
		proxy: &httputil.ReverseProxy{
			Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
			Transport:     tr,
			FlushInterval: -1,
			ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
				http.Error(w, "localaws: "+name+": "+err.Error(), http.StatusBadGateway)
			},
		},
	}, nil
}

// serve runs handler on the listener until srv is closed; the returned channel is closed then.
func (f *frontProxy) serve(srv *http.Server) <-chan struct{} {
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(f.listener) // returns ErrServerClosed on close
	}()
	return served
}
