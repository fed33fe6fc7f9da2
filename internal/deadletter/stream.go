package deadletter

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/dapr-kinesis/kinesis/internal/delivery"
)

// putTimeout bounds one put: a connection that hangs must not hold the record's key for ever, the
// put is tried again after the delivery backoff.
const putTimeout = 10 * time.Second

// API is the part of the Kinesis client a dead-letter stream uses.
type API interface {
	DescribeStreamSummary(context.Context, *kinesis.DescribeStreamSummaryInput, ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
	PutRecord(context.Context, *kinesis.PutRecordInput, ...func(*kinesis.Options)) (*kinesis.PutRecordOutput, error)
}

// Stream is a dead-letter stream for the records read from Source.
type Stream struct {
	api    API
	name   string
	source string
	now    func() time.Time
}

// New returns the dead-letter stream name for records read from source.
func New(api API, name, source string) *Stream {
	return &Stream{api: api, name: name, source: source, now: time.Now}
}

// Check fails unless the stream exists.
func (s *Stream) Check(ctx context.Context) error {
	if _, err := s.api.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(s.name)}); err != nil {
		return fmt.Errorf("dead-letter stream %s: %w", s.name, err)
	}
	return nil
}

// Put writes d's envelope with the record's own partition key, so that the dead letters of a key
// stay in one shard, in the order they were given up.
func (s *Stream) Put(ctx context.Context, d delivery.DeadLetter) error {
	body, err := json.Marshal(NewEnvelope(&d, s.source, s.now()))
	if err != nil {
		return fmt.Errorf("dead-letter envelope: %w", err)
	}
	key := aws.ToString(d.Record.PartitionKey)
	if key == "" {
		// Written without one, on a stream that places records itself: no order to keep, and the
		// dead-letter stream may still want a key (the envelope says there was none).
		key = d.Position.Seq
	}
	ctx, cancel := context.WithTimeout(ctx, putTimeout)
	defer cancel()
	if _, err := s.api.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(s.name), PartitionKey: aws.String(key), Data: body}); err != nil {
		return fmt.Errorf("dead-letter stream %s: %w", s.name, err)
	}
	return nil
}
