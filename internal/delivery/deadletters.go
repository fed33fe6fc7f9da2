package delivery

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/position"
)

// DeadLetter is a record given up on: it failed MaxAttempts times, or was older than MaxAge when it
// came up for delivery.
type DeadLetter struct {
	// Record is the (user) record as read: data, partition key, arrival time.
	Record  types.Record
	ShardID string
	// Position is where the record is in its shard; Sub is -1 unless it is a user record of an
	// aggregate.
	Position position.Position
	// Attempts is how many handler calls the record had.
	Attempts int
	// Reason is the last handler error's text, or why the record was not delivered.
	Reason string
}

// DeadLetterSink keeps the records given up on. Put returns nil only once the record is stored:
// until then the record is not done and the checkpoint does not pass it.
type DeadLetterSink interface {
	Put(ctx context.Context, d DeadLetter) error
}

// tooOld reports why e, coming up for delivery at now, is past the record age limit ("" if it is
// not, or there is none).
func (s *Shard) tooOld(e *entry, now time.Time) string {
	arrived := e.rec.ApproximateArrivalTimestamp
	if s.settings.MaxAge <= 0 || arrived == nil {
		return ""
	}
	if age := now.Sub(*arrived); age > s.settings.MaxAge {
		return fmt.Sprintf("record older than maxRecordAge (%s): arrived %s, %s ago",
			s.settings.MaxAge, arrived.UTC().Format(ArrivalTimeLayout), age.Round(time.Millisecond))
	}
	return ""
}

func (s *Shard) deadLetter(e *entry, reason string) *DeadLetter {
	return &DeadLetter{Record: e.rec, ShardID: s.shardID, Position: e.pos, Attempts: e.attempts, Reason: reason}
}
