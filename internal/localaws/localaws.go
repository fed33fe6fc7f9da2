// Package localaws runs local AWS emulators (kinesis-local, dynalite and
// optionally kinesalite) as child node processes, for tests and the demo.
//
// The emulators are npm packages pinned in tools/emulators and installed with
// `make deps`. Each server listens on a free loopback port chosen at start, so
// several sets can run side by side (parallel packages under `go test ./...`).
package localaws

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
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
}

// Servers is a running set of emulators. Stop it when done.
type Servers struct {
	KinesisEndpoint    string // kinesis-local, plain HTTP
	DynamoDBEndpoint   string // dynalite
	KinesaliteEndpoint string // empty unless Options.Kinesalite
	Region             string

	kinesis    *server
	dynamo     *server
	kinesalite *server
	logDir     string
	httpClient *http.Client

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
	logDir, err := os.MkdirTemp("", "localaws-")
	if err != nil {
		return nil, fmt.Errorf("localaws: log dir: %w", err)
	}

	s := &Servers{Region: Region, logDir: logDir, httpClient: newHTTPClient()}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Stop())
		}
	}()

	// Spawn all before waiting for any: they boot in parallel, so start-up
	// costs as much as the slowest (kinesis-local, ~1 s) rather than the sum.
	if s.kinesis, err = startKinesisLocal(modules, logDir, ports[0], ports[1]); err != nil {
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
	s.DynamoDBEndpoint = s.dynamo.endpoint()
	type wait struct {
		srv   *server
		probe func(context.Context) error
	}
	waits := []wait{{s.kinesis, s.probeKinesis(s.KinesisEndpoint)}, {s.dynamo, s.probeDynamoDB()}}
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
