package producer

import (
	"fmt"

	"github.com/dapr-kinesis/kinesis/internal/shardmap"
)

// Record is one record to put, validated by the caller except for its size, which Put and PutMany
// check against the stream's limit.
type Record struct {
	Data                      []byte
	PartitionKey              string
	ExplicitHashKey           string // optional
	SequenceNumberForOrdering string // optional; Put only (PutRecords has no such field)
}

// Size is what counts against the stream's maximum record size: the data and the partition key.
func (r *Record) Size() int {
	return len(r.Data) + len(r.PartitionKey)
}

// CheckSize returns a *RecordSizeError when r is larger than limit.
func (r *Record) CheckSize(limit int) error {
	if r.Size() > limit {
		return &RecordSizeError{Size: r.Size(), Data: len(r.Data), PartitionKey: len(r.PartitionKey), Limit: limit}
	}
	return nil
}

// RecordSizeError is a record larger than the stream's maximum record size; it was not sent.
type RecordSizeError struct {
	Size, Data, PartitionKey, Limit int
}

func (e *RecordSizeError) Error() string {
	return fmt.Sprintf("record of %d bytes (data %d + partition key %d) exceeds the stream's maximum record size of %d bytes",
		e.Size, e.Data, e.PartitionKey, e.Limit)
}

// Result is where a record was written.
type Result struct {
	ShardID        string
	SequenceNumber string
	// Aggregated is set when the record went out in a KPL aggregate; SubSequenceNumber is then its
	// index there.
	Aggregated        bool
	SubSequenceNumber int
}

// record is a Record on its way: with aggregation, where it goes, set by place: its hash key, and
// the open shard that holds it ("" when no shard map says).
type record struct {
	Record

	hash  shardmap.Key
	shard string
}
