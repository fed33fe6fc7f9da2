package consumerproc

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRSSOfThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc on this system; RSS is read from /proc/<pid>/status")
	}
	kib, err := RSSKiB(os.Getpid())
	require.NoError(t, err)
	assert.Positive(t, kib)
	_, err = RSSKiB(1 << 30)
	require.Error(t, err)
}
