package kinesis

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr/kit/logger"
)

// TestMain gives every test in the package the local emulators (started on first use) and stops
// them, by PID, when the tests end. It then fails the run if any goroutine outlived the tests. A
// test binary started as a crash test's child process runs that child instead (crash_test.go).
func TestMain(m *testing.M) {
	if mode := os.Getenv(crashChildEnv); mode != "" {
		os.Exit(runCrashChild(mode))
	}
	code := localaws.Run(m, localaws.Options{Kinesalite: true})
	if code == 0 {
		if err := goleak.Find(leakIgnores()...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: goroutines outlived the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// leakIgnores lists goroutines that are not leaks. An SDK client's HTTP transport keeps idle
// keep-alive connections, each with a read and a write goroutine, until its idle timeout (90 s);
// the output side's pool belongs to the SDK client, which the binding cannot close, so a closed
// binding's idle connections would be reported here. Only these two are ignored: a goroutine
// waiting for a response (roundTrip) or reading a connection of its own is still a leak.
func leakIgnores() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	}
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// capturedLogger is a logger at debug level whose output the test reads.
func capturedLogger(t *testing.T) (logger.Logger, *syncBuffer) {
	log := logger.NewLogger(t.Name())
	buf := &syncBuffer{}
	log.SetOutput(buf)
	log.SetOutputLevel(logger.DebugLevel)
	return log, buf
}
