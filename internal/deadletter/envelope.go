// Package deadletter keeps the records the input gave up on in a Kinesis stream: one JSON envelope
// per record, with the record's bytes and where it came from, so that an operator can inspect it and
// put it back.
package deadletter

import (
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/dapr-kinesis/kinesis/internal/delivery"
)

// Envelope is what a dead-letter record holds. Its JSON field names are documented in the README;
// changing them breaks the tools that read dead letters.
type Envelope struct {
	// Data is the original record's bytes (base64 in JSON).
	Data         []byte `json:"data"`
	PartitionKey string `json:"partitionKey,omitempty"` // absent for a record written without one
	// StreamName is the stream the record was read from.
	StreamName     string `json:"streamName"`
	ShardID        string `json:"shardId"`
	SequenceNumber string `json:"sequenceNumber"`
	// SubSequenceNumber is set only for a user record of a KPL aggregate.
	SubSequenceNumber           *int   `json:"subSequenceNumber,omitempty"`
	ApproximateArrivalTimestamp string `json:"approximateArrivalTimestamp,omitempty"`
	// Attempts is how many handler calls the record had (0 for one past maxRecordAge when it first
	// came up).
	Attempts int `json:"attempts"`
	// Error is the last handler error's text, or why the record was not delivered.
	Error          string `json:"error"`
	DeadLetteredAt string `json:"deadLetteredAt"`
}

// NewEnvelope describes d, read from stream, as dead-lettered at.
func NewEnvelope(d *delivery.DeadLetter, stream string, at time.Time) Envelope {
	env := Envelope{
		Data:           d.Record.Data,
		PartitionKey:   aws.ToString(d.Record.PartitionKey),
		StreamName:     stream,
		ShardID:        d.ShardID,
		SequenceNumber: d.Position.Seq,
		Attempts:       d.Attempts,
		Error:          d.Reason,
		DeadLetteredAt: at.UTC().Format(delivery.ArrivalTimeLayout),
	}
	if d.Position.Sub >= 0 {
		env.SubSequenceNumber = aws.Int(d.Position.Sub)
	}
	if t := d.Record.ApproximateArrivalTimestamp; t != nil {
		env.ApproximateArrivalTimestamp = t.UTC().Format(delivery.ArrivalTimeLayout)
	}
	return env
}
