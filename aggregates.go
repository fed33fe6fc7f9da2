package kinesis

import (
	"bytes"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	deagg "github.com/awslabs/kinesis-aggregation/go/v2/deaggregator"

	"github.com/dapr/kit/logger"
)

// kplMagic starts every KPL aggregated record.
var kplMagic = []byte{0xf3, 0x89, 0x9a, 0xc2}

// dropUndecodableAggregates removes the records KCL's de-aggregator would fail on: a KPL magic and
// digest around a body that is not a valid aggregate. One such record makes the de-aggregator fail
// the whole GetRecords answer, and KCL then moves past every record of it. Removing that one record
// (and logging it at error level) keeps the others.
func dropUndecodableAggregates(recs []types.Record, shardID string, log logger.Logger) []types.Record {
	var kept []types.Record
	for i := range recs {
		bad := false
		if bytes.HasPrefix(recs[i].Data, kplMagic) {
			_, err := deagg.DeaggregateRecords(recs[i : i+1])
			if bad = err != nil; bad {
				log.WithFields(map[string]any{readShardID: shardID, readSequenceNumber: aws.ToString(recs[i].SequenceNumber)}).
					Errorf("KPL aggregated record cannot be decoded, skipping it: %v", err)
			}
		}
		switch {
		case bad && kept == nil:
			kept = append(make([]types.Record, 0, len(recs)-1), recs[:i]...)
		case !bad && kept != nil:
			kept = append(kept, recs[i])
		}
	}
	if kept == nil {
		return recs
	}
	return kept
}
