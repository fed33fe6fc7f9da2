package shardmap

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

// TestMain gives the tests the local emulators, started on first use, and checks for goroutines
// that outlive them (idle HTTP keep-alive connections aside).
func TestMain(m *testing.M) {
	code := localaws.Run(m, localaws.Options{Kinesalite: true})
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
