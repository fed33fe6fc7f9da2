package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/backoff"
	"github.com/dapr/kit/logger"
)

const (
	activePollFirst = 100 * time.Millisecond
	activePollMax   = 2 * time.Second
	// setupTimeout bounds finding or creating the queue and waiting until it is ACTIVE when the
	// caller's context has no deadline.
	setupTimeout = 2 * time.Minute
)

// API is the part of the Kinesis client queue mode uses; *kinesis.Client has it.
type API interface {
	DescribeStreamSummary(context.Context, *kinesis.DescribeStreamSummaryInput, ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
	CreateQueue(context.Context, *kinesis.CreateQueueInput, ...func(*kinesis.Options)) (*kinesis.CreateQueueOutput, error)
	DescribeQueue(context.Context, *kinesis.DescribeQueueInput, ...func(*kinesis.Options)) (*kinesis.DescribeQueueOutput, error)
	ListQueues(context.Context, *kinesis.ListQueuesInput, ...func(*kinesis.Options)) (*kinesis.ListQueuesOutput, error)
	DeleteQueue(context.Context, *kinesis.DeleteQueueInput, ...func(*kinesis.Options)) (*kinesis.DeleteQueueOutput, error)
	ReceiveQueueRecords(context.Context, *kinesis.ReceiveQueueRecordsInput, ...func(*kinesis.Options)) (*kinesis.ReceiveQueueRecordsOutput, error)
	AcknowledgeQueueRecords(context.Context, *kinesis.AcknowledgeQueueRecordsInput, ...func(*kinesis.Options)) (*kinesis.AcknowledgeQueueRecordsOutput, error)
	UpdateQueueRecordsVisibility(context.Context, *kinesis.UpdateQueueRecordsVisibilityInput, ...func(*kinesis.Options)) (*kinesis.UpdateQueueRecordsVisibilityOutput, error)
}

// Spec says which queue to read: the one of ARN, or else the one called Name on the stream,
// created with the rest of the fields when missing.
type Spec struct {
	ARN    string
	Name   string
	Stream string // the stream's name
	// For a queue created here.
	Start           types.QueueStartingPosition
	Visibility      time.Duration // 0: the service's default (30 s)
	MaxReceiveCount int           // 0: no dead-letter state (a record is delivered until it succeeds)
}

// Queue is the queue a consumer reads.
type Queue struct {
	ARN        string
	Name       string
	Visibility time.Duration
	// MaxReceiveCount is after how many unacknowledged receives a record goes to the queue's
	// dead-letter state; 0 when it never does.
	MaxReceiveCount int
	Created         bool
}

// Ensure returns the queue of spec, ACTIVE: the one of spec.ARN (which must read spec.Stream),
// or the queue called spec.Name on the stream, created when there is none. Queue names are unique
// per account and Region, not per stream: a name taken by a queue of another stream is an error,
// never a read of the wrong stream. Replicas that create the queue together end on the same one:
// a create that loses the race finds the winner's.
func Ensure(ctx context.Context, api API, spec Spec, log logger.Logger) (Queue, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, setupTimeout)
		defer cancel()
	}
	streamARN, err := onDemandStream(ctx, api, spec.Stream)
	if err != nil {
		return Queue{}, err
	}
	arn, created := spec.ARN, false
	if arn == "" {
		if arn, created, err = findOrCreate(ctx, api, spec, streamARN, log); err != nil {
			return Queue{}, err
		}
	}
	q, err := waitActive(ctx, api, arn)
	if err != nil {
		return Queue{}, err
	}
	if !readsStream(q, streamARN) {
		return Queue{}, fmt.Errorf("kinesis binding error: 'queueARN' %s reads another stream than %q", arn, spec.Stream)
	}
	return queueOf(q, created), nil
}

// onDemandStream returns the stream's ARN; queues read on-demand streams only.
func onDemandStream(ctx context.Context, api API, stream string) (string, error) {
	out, err := api.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
	if err != nil {
		return "", fmt.Errorf("kinesis binding error: describing stream %q: %w", stream, awserr.Classify(err))
	}
	sum := out.StreamDescriptionSummary
	if sum.StreamModeDetails == nil || sum.StreamModeDetails.StreamMode != types.StreamModeOnDemand {
		return "", fmt.Errorf("kinesis binding error: mode queue needs an on-demand stream; stream %q is provisioned (UpdateStreamMode can make it on-demand)", stream)
	}
	return aws.ToString(sum.StreamARN), nil
}

func findOrCreate(ctx context.Context, api API, spec Spec, streamARN string, log logger.Logger) (arn string, created bool, err error) {
	arn, err = findByName(ctx, api, spec.Name, streamARN)
	if err != nil || arn != "" {
		return arn, false, err
	}
	out, err := api.CreateQueue(ctx, createInput(spec, streamARN))
	if err == nil {
		arn = aws.ToString(out.QueueDescription.QueueARN)
		log.Infof("Created queue %s (%s) on stream %s", spec.Name, arn, spec.Stream)
		return arn, true, nil
	}
	var inUse *types.ResourceInUseException
	if !errors.As(err, &inUse) {
		return "", false, fmt.Errorf("kinesis binding error: creating queue %q (kinesis:CreateQueue): %w", spec.Name, awserr.Classify(err))
	}
	// Another replica created it first, or the name belongs to a queue of another stream.
	if arn, err = findByName(ctx, api, spec.Name, streamARN); err != nil || arn != "" {
		return arn, false, err
	}
	return "", false, fmt.Errorf("kinesis binding error: 'queueName' %q is taken by a queue of another stream (queue names are unique per account and Region); choose another queueName", spec.Name)
}

// findByName returns the ARN of the queue called name on the stream, or "" when there is none.
// Two of that name would be read as one by no one: that is an error naming both.
func findByName(ctx context.Context, api API, name, streamARN string) (string, error) {
	in := &kinesis.ListQueuesInput{StreamFilter: []types.QueueStreamFilter{{StreamARN: aws.String(streamARN)}}}
	var found []string
	for {
		out, err := api.ListQueues(ctx, in)
		if err != nil {
			return "", fmt.Errorf("kinesis binding error: listing the queues of stream %s (kinesis:ListQueues): %w", streamARN, awserr.Classify(err))
		}
		for _, s := range out.QueueSummaries {
			if aws.ToString(s.QueueName) == name && s.QueueStatus != types.QueueStatusDeleting {
				found = append(found, aws.ToString(s.QueueARN))
			}
		}
		if out.NextToken == nil {
			break
		}
		in.NextToken = out.NextToken
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	slices.Sort(found)
	return "", fmt.Errorf("kinesis binding error: stream %s has %d queues named %q (%s); set queueARN to the one to read", streamARN, len(found), name, strings.Join(found, ", "))
}

func createInput(spec Spec, streamARN string) *kinesis.CreateQueueInput {
	start := spec.Start
	attrs := &types.QueueAttributes{DeadLetterConfiguration: &types.DeadLetterConfiguration{TargetType: types.TargetTypeNone}}
	if spec.MaxReceiveCount > 0 {
		attrs.DeadLetterConfiguration = &types.DeadLetterConfiguration{TargetType: types.TargetTypeBuiltIn, MaxReceiveCount: aws.Int32(int32(min(spec.MaxReceiveCount, 1000)))}
	}
	if spec.Visibility > 0 {
		attrs.VisibilityTimeoutSeconds = aws.Int32(int32(spec.Visibility / time.Second)) //nolint:gosec // at most 12 h, checked by the metadata
	}
	return &kinesis.CreateQueueInput{
		QueueName:               aws.String(spec.Name),
		StreamConfigurationList: []types.QueueStreamConfiguration{{StreamARN: aws.String(streamARN), StartingPosition: &start}},
		QueueAttributes:         attrs,
	}
}

// waitActive describes the queue until it is ACTIVE. A queue being deleted never will be.
func waitActive(ctx context.Context, api API, arn string) (*types.QueueDescription, error) {
	wait := backoff.Exponential{Initial: activePollFirst, Max: activePollMax}
	for {
		out, err := api.DescribeQueue(ctx, &kinesis.DescribeQueueInput{QueueARN: aws.String(arn)})
		if err != nil {
			return nil, fmt.Errorf("kinesis binding error: describing queue %s (kinesis:DescribeQueue): %w", arn, awserr.Classify(err))
		}
		q := out.QueueDescription
		switch q.QueueStatus {
		case types.QueueStatusActive, types.QueueStatusUpdating:
			return q, nil
		case types.QueueStatusDeleting:
			return nil, fmt.Errorf("kinesis binding error: queue %s is being deleted", arn)
		}
		if !backoff.Sleep(ctx, wait.Next()) {
			return nil, fmt.Errorf("kinesis binding error: queue %s is %s, not ACTIVE: %w", arn, q.QueueStatus, context.Cause(ctx))
		}
	}
}

func readsStream(q *types.QueueDescription, streamARN string) bool {
	for _, s := range q.StreamConfigurationList {
		if aws.ToString(s.StreamARN) == streamARN {
			return true
		}
	}
	return false
}

func queueOf(q *types.QueueDescription, created bool) Queue {
	out := Queue{ARN: aws.ToString(q.QueueARN), Name: aws.ToString(q.QueueName), Visibility: 30 * time.Second, Created: created}
	if a := q.QueueAttributes; a != nil {
		if a.VisibilityTimeoutSeconds != nil {
			out.Visibility = time.Duration(*a.VisibilityTimeoutSeconds) * time.Second
		}
		if d := a.DeadLetterConfiguration; d != nil && d.TargetType == types.TargetTypeBuiltIn {
			out.MaxReceiveCount = int(aws.ToInt32(d.MaxReceiveCount))
		}
	}
	return out
}

// Delete deletes the queue (deleteQueueOnClose), within ctx.
func Delete(ctx context.Context, api API, arn string) error {
	if _, err := api.DeleteQueue(ctx, &kinesis.DeleteQueueInput{QueueARN: aws.String(arn)}); err != nil {
		return fmt.Errorf("kinesis binding error: deleting queue %s (kinesis:DeleteQueue): %w", arn, awserr.Classify(err))
	}
	return nil
}
