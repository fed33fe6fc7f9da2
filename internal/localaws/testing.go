package localaws

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

// shared is the servers of the current test binary, started by the first Get.
var shared lazy

// lazy starts servers on first use so that unit tests and fuzzing in the same
// package never start node, and caches the outcome: after a failed start every
// test that needs the servers fails with the same error instead of retrying.
type lazy struct {
	mu      sync.Mutex
	enabled bool // set by Run, which owns stopping
	opts    Options
	once    sync.Once
	servers *Servers
	err     error
}

// Run runs the package's tests with servers available through Get, and stops
// them afterwards, or on SIGINT/SIGTERM (the servers run in their own process
// groups, so a terminal's Ctrl-C does not reach them). Use it as
//
//	func TestMain(m *testing.M) { os.Exit(localaws.Run(m, localaws.Options{})) }
func Run(m *testing.M, opts Options) int {
	shared.enable(opts)
	stopOnSignal := make(chan os.Signal, 1)
	// A signal the test binary was started with ignored (nohup, background
	// jobs of a script) stays ignored: Notify would otherwise enable it.
	var watched []os.Signal
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGTERM} {
		if !signal.Ignored(sig) {
			watched = append(watched, sig)
		}
	}
	if len(watched) > 0 { // Notify without signals would catch them all
		signal.Notify(stopOnSignal, watched...)
	}
	go func() {
		sig, ok := <-stopOnSignal
		if !ok {
			return
		}
		shared.stop()
		// Die of the signal itself so the parent sees the usual status.
		signal.Reset(sig)
		_ = syscall.Kill(os.Getpid(), sig.(syscall.Signal))
	}()

	code := m.Run()
	signal.Stop(stopOnSignal)
	close(stopOnSignal)
	shared.stop()
	return code
}

// Get returns the servers of this test binary, starting them on first use. A
// failed start fails every caller with the same error; it names `make deps`
// when the emulators are not installed.
func Get(t testing.TB) *Servers {
	t.Helper()
	return shared.get(t)
}

// Shared is Get for code without a testing.TB, such as a package's Example functions: it returns
// this test binary's servers, starting them on first use, or the error Get would fail with.
func Shared() (*Servers, error) {
	s, _, err := shared.start()
	return s, err
}

// NewStream creates a uniquely named stream (named after the test) on
// kinesis-local, waits until it is ACTIVE and deletes it when the test ends.
func NewStream(t testing.TB, shards int32) string {
	t.Helper()
	return NewStreamOn(t, Get(t), shards)
}

// NewStreamOn is NewStream on servers of the test's own (started with Start).
func NewStreamOn(t testing.TB, s *Servers, shards int32) string {
	t.Helper()
	return newStream(t, s, func(ctx context.Context, client *kinesis.Client, name string) error {
		return s.CreateStream(ctx, client, name, shards)
	})
}

// NewOnDemandStream creates an on-demand stream (4 shards on kinesis-local) on the shared servers
// for the test and deletes it when the test ends.
func NewOnDemandStream(t testing.TB) string {
	t.Helper()
	s := Get(t)
	return newStream(t, s, s.CreateOnDemandStream)
}

func newStream(t testing.TB, s *Servers, create func(context.Context, *kinesis.Client, string) error) string {
	t.Helper()
	client := s.KinesisClient()
	name := UniqueName(t.Name())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := create(ctx, client, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Deleted streams free kinesis-local's memory, which slows it down as it
		// fills. t.Context is already cancelled here.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := client.DeleteStream(ctx, &kinesis.DeleteStreamInput{
			StreamName: aws.String(name), EnforceConsumerDeletion: aws.Bool(true),
		})
		if err != nil {
			t.Logf("localaws: delete stream %s: %v", name, err)
		}
	})
	return name
}

func (l *lazy) enable(opts Options) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.enabled, l.opts = true, opts
}

func (l *lazy) get(t testing.TB) *Servers {
	t.Helper()
	s, took, err := l.start()
	if err != nil {
		t.Fatal(err)
		return nil
	}
	if took > 0 {
		t.Logf("localaws: servers ready in %v", took.Round(time.Millisecond))
	}
	return s
}

// start returns the servers, starting them on the first call; took is how long that start took,
// and 0 on every other call.
func (l *lazy) start() (_ *Servers, took time.Duration, _ error) {
	l.mu.Lock()
	enabled, opts := l.enabled, l.opts
	l.mu.Unlock()
	if !enabled {
		// Without Run nobody would stop the servers.
		return nil, 0, errors.New("localaws: the servers need the package's TestMain to call localaws.Run")
	}
	l.once.Do(func() {
		began := time.Now()
		s, err := Start(context.Background(), opts)
		took = time.Since(began)
		l.mu.Lock()
		l.servers, l.err = s, err
		l.mu.Unlock()
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.servers, took, l.err
}

func (l *lazy) stop() {
	l.mu.Lock()
	s := l.servers
	l.mu.Unlock()
	if s != nil {
		if err := s.Stop(); err != nil {
			// Run has no test to report to.
			fmt.Fprintln(os.Stderr, err)
		}
	}
}
