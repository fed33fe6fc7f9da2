package main

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/consumerproc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestMain fails the package if a goroutine outlives its tests. The test binary also serves as
// the soak's consumer process in TestSoakSmoke.
func TestMain(m *testing.M) {
	if consumerproc.IsChild() {
		os.Exit(consumerproc.RunChild())
	}
	goleak.VerifyTestMain(m)
}

// TestTallyCountsLossAndDuplicates: the figures the soak prints, from known deliveries.
func TestTallyCountsLossAndDuplicates(t *testing.T) {
	tl := newTally()
	put := time.Unix(100, 0)
	for id := range int64(5) {
		tl.putResult(id, nil)
	}
	tl.putResult(5, errors.New("timeout")) // failed, yet written
	tl.putResult(6, errors.New("refused")) // failed, not written

	at := func(ms int64) int64 { return put.Add(time.Duration(ms) * time.Millisecond).UnixNano() }
	tl.delivered("c1", recordData(0, put), at(10))
	tl.delivered("c1", recordData(1, put), at(20))
	tl.delivered("c2", recordData(1, put), at(500)) // a replay: no second latency sample
	tl.delivered("c2", recordData(2, put), at(30))
	tl.delivered("c2", recordData(5, put), at(40))
	tl.delivered("c2", "not a soak record", at(1))
	assert.Equal(t, 2, tl.outstanding(), "3 and 4")

	s := tl.summarize()
	assert.Equal(t, 5, s.sent)
	assert.Equal(t, 2, s.failed)
	assert.Equal(t, 4, s.receivedDistinct)
	assert.Equal(t, 5, s.deliveries)
	assert.Equal(t, 2, s.lost)
	assert.Equal(t, []int64{3, 4}, s.lostExamples)
	assert.Equal(t, 1, s.duplicated)
	assert.Equal(t, 1, s.failedButDelivered)
	assert.Equal(t, 1, s.foreign)
	assert.Equal(t, 20*time.Millisecond, s.p50)
	assert.Equal(t, 40*time.Millisecond, s.p99)
	assert.Equal(t, map[string]int{"c1": 2, "c2": 4}, s.byName)

	var out strings.Builder
	s.print(&out)
	assert.Contains(t, out.String(), "lost (sent, never received):     2")
	assert.Contains(t, out.String(), "p50 20ms  p99 40ms")
}

func TestPercentile(t *testing.T) {
	assert.Zero(t, percentile(nil, 0.5))
	vals := make([]time.Duration, 100)
	for i := range vals {
		vals[i] = time.Duration(i+1) * time.Millisecond
	}
	assert.Equal(t, 50*time.Millisecond, percentile(vals, 0.50))
	assert.Equal(t, 99*time.Millisecond, percentile(vals, 0.99))
	assert.Equal(t, 100*time.Millisecond, percentile(vals, 1))
}

func TestParseRecordRejectsOthers(t *testing.T) {
	id, put, ok := parseRecord(recordData(42, time.Unix(0, 7)))
	require.True(t, ok)
	assert.Equal(t, int64(42), id)
	assert.Equal(t, int64(7), put)
	for _, bad := range []string{"", "soak|x|1", "soak|1", "other|1|2", "soak|1|2|3"} {
		_, _, ok := parseRecord(bad)
		assert.False(t, ok, bad)
	}
}
