package delivery

import (
	"bytes"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	deagg "github.com/awslabs/kinesis-aggregation/go/v2/deaggregator"

	"github.com/dapr-kinesis/kinesis/internal/position"
)

// kplMagic starts every KPL aggregated record.
var kplMagic = []byte{0xf3, 0x89, 0x9a, 0xc2}

// userRecord is what one handler call delivers: a plain Kinesis record, or one user record of a KPL
// aggregate.
type userRecord struct {
	rec types.Record
	pos position.Position
	// of is how many user records share pos.Seq (1 for a plain record): the last one completes it.
	of int
	// aggregateErr is set on a record that carries the KPL magic but does not decode.
	aggregateErr error
}

// userRecords expands one Kinesis record. A record that looks like an aggregate but does not decode
// is delivered whole, as KCL Java does, so that the app can see it: dropping it would lose data.
func userRecords(rec types.Record) []userRecord {
	seq := *rec.SequenceNumber
	if !bytes.HasPrefix(rec.Data, kplMagic) {
		return []userRecord{{rec: rec, pos: position.Position{Seq: seq, Sub: -1}, of: 1}}
	}
	subs, err := deaggregate(rec)
	if err != nil {
		return []userRecord{{rec: rec, pos: position.Position{Seq: seq, Sub: -1}, of: 1, aggregateErr: err}}
	}
	if len(subs) == 1 && bytes.Equal(subs[0].Data, rec.Data) {
		// The magic, but not an aggregate (its digest does not match): a plain record.
		return []userRecord{{rec: rec, pos: position.Position{Seq: seq, Sub: -1}, of: 1}}
	}
	out := make([]userRecord, len(subs))
	for i := range subs {
		out[i] = userRecord{rec: subs[i], pos: position.Position{Seq: seq, Sub: i}, of: len(subs)}
	}
	return out
}

// deaggregate runs awslabs' de-aggregator on one record. It indexes the partition key table with the
// record's own index unchecked, so a corrupt aggregate whose digest still matches makes it panic;
// that is turned into an error here.
func deaggregate(rec types.Record) (subs []types.Record, err error) {
	defer func() {
		if r := recover(); r != nil {
			subs, err = nil, fmt.Errorf("malformed KPL aggregate: %v", r)
		}
	}()
	subs, err = deagg.DeaggregateRecords([]types.Record{rec})
	if err != nil {
		return nil, fmt.Errorf("malformed KPL aggregate: %w", err)
	}
	return subs, nil
}
