package delivery

import (
	"strconv"
)

// ReadResponse.Metadata keys set on delivered records.
const (
	MetaShardID           = "shardId"
	MetaSequenceNumber    = "sequenceNumber"
	MetaSubSequenceNumber = "subSequenceNumber" // only for user records of a KPL aggregate
	MetaPartitionKey      = "partitionKey"
	MetaArrivalTimestamp  = "approximateArrivalTimestamp"
	MetaStreamName        = "streamName"
	// MetaAggregateError is set, to the decoder's error, on a record that carries the KPL magic but
	// does not decode: it is delivered as it was stored, never dropped.
	MetaAggregateError = "kplAggregateError"

	// ArrivalTimeLayout is RFC 3339 with milliseconds, the precision Kinesis gives.
	ArrivalTimeLayout = "2006-01-02T15:04:05.000Z07:00"
)

func (s *Shard) metadata(r *userRecord) map[string]string {
	md := map[string]string{
		MetaShardID:        s.shardID,
		MetaSequenceNumber: r.pos.Seq,
		MetaStreamName:     s.settings.StreamName,
	}
	if r.rec.PartitionKey != nil { // a record written without one, on a stream that places records itself
		md[MetaPartitionKey] = *r.rec.PartitionKey
	}
	if r.rec.ApproximateArrivalTimestamp != nil {
		md[MetaArrivalTimestamp] = r.rec.ApproximateArrivalTimestamp.UTC().Format(ArrivalTimeLayout)
	}
	if r.pos.Sub >= 0 {
		md[MetaSubSequenceNumber] = strconv.Itoa(r.pos.Sub)
	}
	if r.aggregateErr != nil {
		md[MetaAggregateError] = r.aggregateErr.Error()
	}
	return md
}

func recordFields(r *userRecord, attempt int) map[string]any {
	f := map[string]any{MetaSequenceNumber: r.pos.Seq, "attempt": attempt}
	if r.pos.Sub >= 0 {
		f[MetaSubSequenceNumber] = r.pos.Sub
	}
	return f
}
