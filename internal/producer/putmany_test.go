package producer

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestChunksKeepOrderAndLimits(t *testing.T) {
	t.Parallel()
	mk := func(sizes ...int) []*pendingRecord {
		out := make([]*pendingRecord, 0, len(sizes))
		for _, n := range sizes {
			out = append(out, newPendingRecord(&record{Record: Record{Data: make([]byte, n-1), PartitionKey: "k"}}, time.Time{}))
		}
		return out
	}
	sizes := func(groups [][]*pendingRecord) [][]int {
		out := make([][]int, 0, len(groups))
		for _, g := range groups {
			s := make([]int, 0, len(g))
			for _, pr := range g {
				s = append(s, pr.rec.Size())
			}
			out = append(out, s)
		}
		return out
	}
	chunks := (&Producer{}).chunks
	mib := 1 << 20
	assert.Empty(t, chunks(nil))
	assert.Equal(t, [][]int{{mib, mib, mib, mib, mib}, {1}}, sizes(chunks(mk(mib, mib, mib, mib, mib, 1))))
	assert.Equal(t, [][]int{{1}, {6 * mib}, {1}}, sizes(chunks(mk(1, 6*mib, 1))), "a record over 5 MiB goes alone")
	many := chunks(mk(slices.Repeat([]int{1}, 1001)...))
	require.Len(t, many, 3)
	assert.Equal(t, []int{500, 500, 1}, []int{len(many[0]), len(many[1]), len(many[2])})
}
