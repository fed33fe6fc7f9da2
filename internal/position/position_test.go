package position

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCheckpointPositions(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "7", Position{Seq: "7", Sub: -1}.Checkpoint(1))
	assert.Equal(t, "7:0", Position{Seq: "7", Sub: 0}.Checkpoint(3))
	assert.Equal(t, "7", Position{Seq: "7", Sub: 2}.Checkpoint(3), "the last user record completes the record")
	p, ok := Parse("7:2")
	assert.True(t, ok)
	assert.Equal(t, Position{Seq: "7", Sub: 2}, p)
	for _, cp := range []string{"", "7", ShardEnd, ":1", "7:x", "7:-1"} {
		_, ok := Parse(cp)
		assert.False(t, ok, cp)
	}
	assert.True(t, SeqLess("99", "100"))
	assert.True(t, SeqLess("100", "101"))
	assert.False(t, SeqLess("101", "101"))
}

// FuzzParseCheckpoint: a checkpoint position survives its round trip, and sentinels or plain
// sequence numbers are never read as a position inside an aggregate.
func FuzzParseCheckpoint(f *testing.F) {
	f.Add("49590338271490256608559692538361571095921575989136588898:3")
	f.Add("SHARD_END")
	f.Add("123")
	f.Add(":1")
	f.Add("1:-1")
	f.Fuzz(func(t *testing.T, cp string) {
		p, ok := Parse(cp)
		if !ok {
			return
		}
		if p.Seq == "" || p.Sub < 0 {
			t.Fatalf("%q parsed as %+v", cp, p)
		}
		again, ok := Parse(p.Checkpoint(p.Sub + 2))
		if !ok || again != p {
			t.Fatalf("%q: round trip gave %+v, %v", cp, again, ok)
		}
	})
}
