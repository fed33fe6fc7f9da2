package kinesis

import (
	"os"
	"testing"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

// TestMain gives every test in the package the local emulators (started on first use) and stops
// them, by PID, when the tests end.
func TestMain(m *testing.M) {
	os.Exit(localaws.Run(m, localaws.Options{Kinesalite: true}))
}
