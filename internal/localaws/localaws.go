// Package localaws runs local AWS emulators (kinesis-local, dynalite and
// optionally kinesalite) as child node processes, for tests and the demo.
//
// The emulators are npm packages pinned in tools/emulators and installed with
// `make deps`. Each server listens on a free loopback port chosen at start, so
// several sets can run side by side (parallel packages under `go test ./...`).
package localaws

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/faultproxy"
)

// Region and the static credentials every client of the emulators uses. The
// emulators accept any signature; fixed values keep the SDK away from the
// environment and shared config files.
const (
	Region          = "us-east-1"
	AccessKeyID     = "local"
	SecretAccessKey = "local"
)

const defaultStartTimeout = 30 * time.Second

// Options selects what Start runs.
type Options struct {
	// Kinesalite also starts kinesalite, a faster Kinesis emulator with
	// polling APIs only (see TESTING-ENV.md).
	Kinesalite bool
	// StartTimeout bounds the wait for all servers to answer; 0 means 30 s.
	StartTimeout time.Duration
	// PersistDir, if set, is where kinesis-local keeps its data across
	// RestartKinesis (and loads it from at start). Empty means in memory only.
	// KinesisEndpoint is then a TCP relay in front of kinesis-local, which a
	// restart uses to refuse requests while the data is being kept.
	PersistDir string
	// PersistInterval is how often kinesis-local writes its data with
	// PersistDir; a restart waits for two writes. 0 means 1 s. Each write
	// serialises every stream: raise it for big data sets.
	PersistInterval time.Duration
}

// Servers is a running set of emulators. Stop it when done.
type Servers struct {
	KinesisEndpoint    string // kinesis-local, plain HTTP
	DynamoDBEndpoint   string // dynalite
	KinesaliteEndpoint string // empty unless Options.Kinesalite
	Region             string

	// mu guards kinesis, which RestartKinesis replaces, and stopped, against Stop.
	mu         sync.Mutex
	kinesis    *server
	dynamo     *server
	kinesalite *server
	logDir     string
	httpClient *http.Client

	// What RestartKinesis needs to start kinesis-local again as it was.
	modules         string
	kinesisPorts    [2]int // plain, TLS
	persistDir      string
	persistInterval time.Duration
	relay           *faultproxy.Proxy // nil unless persistDir is set
	stopped         bool

	stopOnce sync.Once
	stopErr  error
}

// Start launches the emulators and waits until each answers a request. ctx
// bounds the start-up only: the servers run until Stop, and die with this
// process if it exits without calling Stop.
func Start(ctx context.Context, opts Options) (_ *Servers, err error) {
	modules, err := emulatorsDir(opts.Kinesalite)
	if err != nil {
		return nil, err
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = defaultStartTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// Three ports are always needed: kinesis-local insists on a TLS port too.
	nports := 3
	if opts.Kinesalite {
		nports++
	}
	ports, err := freePorts(nports)
	if err != nil {
		return nil, err
	}
	persistDir := opts.PersistDir
	if persistDir != "" {
		// kinesis-local runs in the log dir: a relative path would land there.
		if persistDir, err = filepath.Abs(persistDir); err != nil {
			return nil, fmt.Errorf("localaws: persist dir: %w", err)
		}
	}
	logDir, err := os.MkdirTemp("", "localaws-")
	if err != nil {
		return nil, fmt.Errorf("localaws: log dir: %w", err)
	}

	s := &Servers{
		Region: Region, logDir: logDir, httpClient: newHTTPClient(),
		modules: modules, kinesisPorts: [2]int{ports[0], ports[1]}, persistDir: persistDir,
		persistInterval: cmp.Or(opts.PersistInterval, defaultPersistInterval),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Stop())
		}
	}()

	// Spawn all before waiting for any: they boot in parallel, so start-up
	// costs as much as the slowest (kinesis-local, ~1 s) rather than the sum.
	if s.kinesis, err = startKinesisLocal(modules, logDir, ports[0], ports[1], persistDir, s.persistInterval); err != nil {
		return nil, err
	}
	if s.dynamo, err = startDynalite(modules, logDir, ports[2]); err != nil {
		return nil, err
	}
	if opts.Kinesalite {
		if s.kinesalite, err = startKinesalite(modules, logDir, ports[3]); err != nil {
			return nil, err
		}
	}

	s.KinesisEndpoint = s.kinesis.endpoint()
	if persistDir != "" {
		if s.relay, err = faultproxy.New(s.KinesisEndpoint); err != nil {
			return nil, fmt.Errorf("localaws: kinesis-local relay: %w", err)
		}
		s.KinesisEndpoint = s.relay.URL()
	}
	s.DynamoDBEndpoint = s.dynamo.endpoint()
	type wait struct {
		srv   *server
		probe func(context.Context) error
	}
	waits := []wait{{s.kinesis, s.probeKinesis(s.kinesis.endpoint())}, {s.dynamo, s.probeDynamoDB()}}
	if s.kinesalite != nil {
		s.KinesaliteEndpoint = s.kinesalite.endpoint()
		waits = append(waits, wait{s.kinesalite, s.probeKinesis(s.KinesaliteEndpoint)})
	}
	for _, w := range waits {
		if err := w.srv.waitReady(ctx, w.probe); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Stop terminates the servers it started: SIGTERM, then SIGKILL for any still
// running after a grace period. It removes the log directory. Calling it again
// returns the first call's result.
func (s *Servers) Stop() error {
	s.stopOnce.Do(func() {
		s.mu.Lock() // waits for a restart in progress, whose server must be stopped too
		defer s.mu.Unlock()
		s.stopped = true
		running := make([]*server, 0, 3)
		for _, srv := range []*server{s.kinesis, s.dynamo, s.kinesalite} {
			if srv != nil {
				running = append(running, srv)
			}
		}
		// Servers that shut down gracefully wait for open connections, so
		// close ours first; then signal all so the grace periods overlap.
		s.httpClient.CloseIdleConnections()
		var errs []error
		if s.relay != nil {
			errs = append(errs, s.relay.Close())
		}
		for _, srv := range running {
			errs = append(errs, srv.signal(syscall.SIGTERM))
		}
		deadline := time.Now().Add(stopGrace)
		for _, srv := range running {
			errs = append(errs, srv.waitOrKill(time.Until(deadline)))
		}
		if err := os.RemoveAll(s.logDir); err != nil {
			errs = append(errs, fmt.Errorf("localaws: remove log dir: %w", err))
		}
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}
