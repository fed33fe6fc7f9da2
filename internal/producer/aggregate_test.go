package producer

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPackerKeepsEachAggregateWithinTheLimitAndEachGroupInOrder(t *testing.T) {
	t.Parallel()
	const limit = 2000
	pk := newPacker(limit)
	all := make([]*pendingRecord, 0, 200)
	for i := range 200 {
		r := &record{Record: Record{Data: bytes.Repeat([]byte{'d'}, 10+i%90), PartitionKey: "key-" + strconv.Itoa(i%7)}}
		r.shard = "shard-" + strconv.Itoa(i%3)
		pr := newPendingRecord(r, time.Time{})
		entries, bytes := pk.cost(pr)
		before, beforeBytes := len(pk.entries), pk.bytes
		pk.add(pr)
		assert.Len(t, pk.entries, before+entries, "cost predicts the entries")
		assert.Equal(t, beforeBytes+bytes, pk.bytes, "cost predicts the bytes")
		all = append(all, pr)
	}
	total, seen := 0, map[*pendingRecord]int{}
	last := map[string]int{}
	for _, e := range pk.entries {
		assert.LessOrEqual(t, e.size(), limit)
		if len(e.members) > 1 {
			enc, err := e.agg.Encode()
			require.NoError(t, err)
			assert.Equal(t, len(enc)+len(e.first().PartitionKey), e.size(), "size is the encoded size plus the key")
		}
		for _, m := range e.members {
			assert.Equal(t, e.first().shard, m.rec.shard, "one shard per entry")
			seen[m] = len(seen)
			total++
		}
	}
	require.Equal(t, len(all), total)
	for i, pr := range all { // per shard, entries (in request order) hold records in the order added
		at := seen[pr]
		if prev, ok := last[pr.rec.shard]; ok {
			assert.Greater(t, at, prev, "record %d", i)
		}
		last[pr.rec.shard] = at
	}
}
