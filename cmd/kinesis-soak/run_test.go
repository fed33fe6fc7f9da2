package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSoakSmoke runs the soak for a few seconds, with the fault proxy cutting connections, so that
// the command keeps working; it checks that nothing was lost, never a figure of speed.
func TestSoakSmoke(t *testing.T) {
	lost, err := run(t.Context(), config{
		duration: 3 * time.Second, maxRecords: 1000, consumers: 2, producers: 2, rate: 30, shards: 2,
		proxy: true, cutEvery: time.Second, drain: time.Minute, reportEvery: time.Second,
		leaseDur: 3 * time.Second, logDir: t.TempDir(),
	})
	require.NoError(t, err)
	require.Zero(t, lost)
}
