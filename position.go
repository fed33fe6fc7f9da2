package kinesis

import (
	"strconv"
	"strings"
)

// A checkpoint in the lease table is normally a sequence number: everything up to and including that
// record was delivered. KCL cannot store a sub-sequence number, so a checkpoint that falls inside a
// KPL aggregate is written as "<sequenceNumber>:<subSequenceNumber>": the aggregate's user records up
// to and including that index were delivered. The KCL-facing Kinesis client turns such a position
// into an AT_SEQUENCE_NUMBER start (kclclient.go), and the record processor skips the sub-records
// already delivered. Plain sequence numbers never contain ':'.
const subSequenceSeparator = ":"

// position is a place in a shard: a record and, inside a KPL aggregate, one of its user records.
type position struct {
	seq string
	sub int // index of the user record inside its aggregate; -1 when the record is not aggregated
}

// checkpoint is the lease-table form of "delivered up to and including p". Within an aggregate of n
// user records, the last one completes the Kinesis record, so the plain sequence number is written.
func (p position) checkpoint(n int) string {
	if p.sub < 0 || p.sub >= n-1 {
		return p.seq
	}
	return p.seq + subSequenceSeparator + strconv.Itoa(p.sub)
}

// parseCheckpoint reads a checkpoint written by position.checkpoint. ok is false for sentinels such as
// SHARD_END, an empty checkpoint, and plain sequence numbers (nothing to skip inside an aggregate).
func parseCheckpoint(cp string) (p position, ok bool) {
	seq, subStr, found := strings.Cut(cp, subSequenceSeparator)
	if !found || seq == "" {
		return position{}, false
	}
	sub, err := strconv.Atoi(subStr)
	if err != nil || sub < 0 {
		return position{}, false
	}
	return position{seq: seq, sub: sub}, true
}
