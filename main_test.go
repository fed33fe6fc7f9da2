package kinesis

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
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
