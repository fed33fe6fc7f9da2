package leases

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

// TestMain gives the tests the local emulators (kinesis-local for the shard listings, dynalite for
// the lease table) and fails the run if any goroutine outlived them.
func TestMain(m *testing.M) {
	code := localaws.Run(m, localaws.Options{})
	if code == 0 {
		if err := goleak.Find(
			// Idle keep-alive connections of the test's SDK clients (see the root package's main_test.go).
			goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: goroutines outlived the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}
