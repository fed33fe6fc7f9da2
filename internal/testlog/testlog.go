// Package testlog gives tests a logger whose output they can read: the binding's promises about
// logging (one line per failure episode, the shard in every line, no secrets) are checked on it.
package testlog

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dapr/kit/logger"
)

// Buffer collects log output written from several goroutines.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything logged so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Count returns how many log lines so far contain substr.
func (b *Buffer) Count(substr string) int {
	n := 0
	for line := range strings.Lines(b.String()) {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

var loggers atomic.Int64

// New returns a logger at debug level, named for the test, and the buffer it writes to. Each call
// gives a logger of its own: dapr/kit keeps one logger per name, so a second logger of the same name
// would take the first one's output away.
func New(t testing.TB) (logger.Logger, *Buffer) {
	log := logger.NewLogger(fmt.Sprintf("%s#%d", t.Name(), loggers.Add(1)))
	buf := &Buffer{}
	log.SetOutput(buf)
	log.SetOutputLevel(logger.DebugLevel)
	return log, buf
}
