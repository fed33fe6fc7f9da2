package kinesis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/backoff"
	"github.com/dapr/kit/logger"
)

const (
	consumerPollFirst = 50 * time.Millisecond
	consumerPollMax   = 2 * time.Second
	// consumerReadyTimeout bounds Read's wait for the stream consumer when its ctx has no deadline.
	// AWS usually activates a new consumer within seconds.
	consumerReadyTimeout = 2 * time.Minute
)

// streamConsumers is the part of the Kinesis API that manages enhanced fan-out consumers.
type streamConsumers interface {
	DescribeStreamSummary(context.Context, *kinesis.DescribeStreamSummaryInput, ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
	DescribeStreamConsumer(context.Context, *kinesis.DescribeStreamConsumerInput, ...func(*kinesis.Options)) (*kinesis.DescribeStreamConsumerOutput, error)
	RegisterStreamConsumer(context.Context, *kinesis.RegisterStreamConsumerInput, ...func(*kinesis.Options)) (*kinesis.RegisterStreamConsumerOutput, error)
	DeregisterStreamConsumer(context.Context, *kinesis.DeregisterStreamConsumerInput, ...func(*kinesis.Options)) (*kinesis.DeregisterStreamConsumerOutput, error)
}

// ensureConsumer returns the ARN of the ACTIVE stream consumer extended mode reads through: the
// configured consumerARN, or the consumer named consumerName, registered when missing. Replicas
// starting together may all find it missing; the ones whose registration loses the race wait for
// the winner's consumer like everyone else.
func ensureConsumer(ctx context.Context, api streamConsumers, m *kinesisMetadata, log logger.Logger) (string, error) {
	if _, hasDeadline := ctx.Deadline(); !hasDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, consumerReadyTimeout)
		defer cancel()
	}

	in := &kinesis.DescribeStreamConsumerInput{}
	if m.ConsumerARN != "" {
		// A pre-registered consumer is used as given; describing it only waits until it is ACTIVE
		// and turns a wrong ARN into a clear error here instead of failed subscriptions later.
		in.ConsumerARN = aws.String(m.ConsumerARN)
	} else {
		summary, err := api.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(m.StreamName)})
		if err != nil {
			return "", fmt.Errorf("kinesis binding error: describing stream %q: %w", m.StreamName, awserr.Classify(err))
		}
		in.StreamARN = summary.StreamDescriptionSummary.StreamARN
		in.ConsumerName = aws.String(m.ConsumerName)
	}

	wait := consumerPollFirst
	for {
		arn, status, err := describeConsumer(ctx, api, in)
		switch {
		case err == nil && status == types.ConsumerStatusActive:
			return arn, nil
		case err == nil:
			// CREATING, or DELETING: a consumer of this name on its way out is registered anew once gone.
			err = fmt.Errorf("kinesis binding error: stream consumer %s is %s", consumerRef(in), status)
		case errors.Is(err, errConsumerMissing) && m.ConsumerARN == "":
			if rerr := registerConsumer(ctx, api, in, log); rerr != nil {
				if !awserr.IsRetryable(rerr) {
					return "", rerr
				}
				err = rerr
			}
		case !awserr.IsRetryable(err):
			return "", err
		}
		if !backoff.Sleep(ctx, backoff.Jitter(wait)) {
			return "", fmt.Errorf("%w (gave up waiting: %w)", err, ctx.Err())
		}
		wait = min(2*wait, consumerPollMax)
	}
}

// errConsumerMissing marks a DescribeStreamConsumer that found no such consumer.
var errConsumerMissing = errors.New("stream consumer not found")

func describeConsumer(ctx context.Context, api streamConsumers, in *kinesis.DescribeStreamConsumerInput) (string, types.ConsumerStatus, error) {
	out, err := api.DescribeStreamConsumer(ctx, in)
	var notFound *types.ResourceNotFoundException
	if errors.As(err, &notFound) {
		return "", "", fmt.Errorf("kinesis binding error: %w: %s: %w", errConsumerMissing, consumerRef(in), err)
	}
	if err != nil {
		return "", "", fmt.Errorf("kinesis binding error: describing stream consumer %s: %w", consumerRef(in), awserr.Classify(err))
	}
	d := out.ConsumerDescription
	return aws.ToString(d.ConsumerARN), d.ConsumerStatus, nil
}

func registerConsumer(ctx context.Context, api streamConsumers, in *kinesis.DescribeStreamConsumerInput, log logger.Logger) error {
	out, err := api.RegisterStreamConsumer(ctx, &kinesis.RegisterStreamConsumerInput{
		StreamARN: in.StreamARN, ConsumerName: in.ConsumerName,
	})
	var inUse *types.ResourceInUseException
	switch {
	case errors.As(err, &inUse):
		// Another replica registered it first (or the stream is being updated): the caller looks again.
		return nil
	case err != nil:
		// Throttling (5 registrations per second per stream) is retryable; the 20-consumer limit is not,
		// but AWS names both LimitExceededException: the caller retries until its deadline.
		return fmt.Errorf("kinesis binding error: registering stream consumer %s: %w", consumerRef(in), awserr.Classify(err))
	}
	log.Infof("Registered stream consumer %s (%s); it stays registered after Close unless deregisterConsumerOnClose is set",
		aws.ToString(in.ConsumerName), aws.ToString(out.Consumer.ConsumerARN))
	return nil
}

// deregisterConsumer removes the consumer; only the deregisterConsumerOnClose opt-in calls it, as
// other replicas may read through the same consumer. AWS deletes it asynchronously.
func deregisterConsumer(ctx context.Context, api streamConsumers, consumerARN string) error {
	_, err := api.DeregisterStreamConsumer(ctx, &kinesis.DeregisterStreamConsumerInput{ConsumerARN: aws.String(consumerARN)})
	var notFound *types.ResourceNotFoundException
	if err != nil && !errors.As(err, &notFound) {
		return fmt.Errorf("kinesis binding error: deregistering stream consumer %s: %w", consumerARN, awserr.Classify(err))
	}
	return nil
}

func consumerRef(in *kinesis.DescribeStreamConsumerInput) string {
	if in.ConsumerARN != nil {
		return aws.ToString(in.ConsumerARN)
	}
	return fmt.Sprintf("%q of stream %s", aws.ToString(in.ConsumerName), aws.ToString(in.StreamARN))
}
