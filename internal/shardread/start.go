package shardread

import (
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/position"
)

// from returns where a read begins: after the last record read in this tenure, else from Start
// (ts: at Start.Timestamp).
func (s Start) from(lastRead string) (typ types.ShardIteratorType, seq string, ts bool) {
	switch {
	case lastRead != "":
		return types.ShardIteratorTypeAfterSequenceNumber, lastRead, false
	case s.Checkpoint != "":
		if p, ok := position.Parse(s.Checkpoint); ok {
			// Inside an aggregate: read it again; the delivery contract skips what was delivered.
			return types.ShardIteratorTypeAtSequenceNumber, p.Seq, false
		}
		return types.ShardIteratorTypeAfterSequenceNumber, s.Checkpoint, false
	case s.FromTrimHorizon:
		return types.ShardIteratorTypeTrimHorizon, "", false
	case s.Initial == types.ShardIteratorTypeAtTimestamp:
		return s.Initial, "", true
	case s.Initial == "":
		return types.ShardIteratorTypeLatest, "", false
	default:
		return s.Initial, "", false
	}
}
