// Package position is the lease table's checkpoint format: where in a shard a consumer has delivered
// up to.
//
// A checkpoint is normally a sequence number: everything up to and including that record was
// delivered. The vmware-go-kcl lease table format (which upstream's binding writes) has no field for
// a sub-sequence number, so a checkpoint that falls inside a KPL aggregate is written as
// "<sequenceNumber>:<subSequenceNumber>": the aggregate's user records up to and including that
// index were delivered. A reader resumes AT that sequence number and skips the user records already
// delivered. Plain sequence numbers never contain ':'. SHARD_END marks a shard read to its end.
package position

import (
	"strconv"
	"strings"
)

// ShardEnd is the checkpoint of a shard whose every record was delivered.
const ShardEnd = "SHARD_END"

const subSequenceSeparator = ":"

// Position is a place in a shard: a record and, inside a KPL aggregate, one of its user records.
type Position struct {
	Seq string
	Sub int // index of the user record inside its aggregate; -1 when the record is not aggregated
}

// Checkpoint is the lease-table form of "delivered up to and including p". Within an aggregate of n
// user records, the last one completes the Kinesis record, so the plain sequence number is written.
func (p Position) Checkpoint(n int) string {
	if p.Sub < 0 || p.Sub >= n-1 {
		return p.Seq
	}
	return p.Seq + subSequenceSeparator + strconv.Itoa(p.Sub)
}

// Parse reads a checkpoint inside an aggregate, as written by Checkpoint. ok is false for SHARD_END,
// an empty checkpoint and plain sequence numbers (nothing to skip inside an aggregate).
func Parse(cp string) (p Position, ok bool) {
	seq, subStr, found := strings.Cut(cp, subSequenceSeparator)
	if !found || seq == "" {
		return Position{}, false
	}
	sub, err := strconv.Atoi(subStr)
	if err != nil || sub < 0 {
		return Position{}, false
	}
	return Position{Seq: seq, Sub: sub}, true
}

// SeqLess orders Kinesis sequence numbers: decimal strings of up to 128 digits, without leading zeros.
func SeqLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}
