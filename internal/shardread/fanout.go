package shardread

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/backoff"
	"github.com/dapr-kinesis/kinesis/internal/episode"
	"github.com/dapr/kit/logger"
)

const (
	// minSubscribeGap is AWS's limit: one SubscribeToShard call per second per consumer and shard.
	minSubscribeGap = time.Second
	// Refusals other than ResourceInUseException (throttling, access, a missing consumer) back off.
	subscribeRetryFirst = time.Second
	subscribeRetryMax   = 30 * time.Second
)

type fanOut struct {
	cfg FanOutConfig
	log logger.Logger

	// The failure episode and its backoffs, ended by the first event of a subscription.
	failures *episode.Episode
	refused  backoff.Exponential
}

// NewFanOut returns a reader of enhanced fan-out subscriptions:
//   - SubscribeToShard from Start; when a subscription ends (5 minutes on AWS) or its connection drops,
//     subscribes again AFTER the last ContinuationSequenceNumber, as soon as AWS allows (one call per
//     second per shard and consumer);
//   - ResourceInUseException (another subscription on the shard still open) is retried once a second;
//     other refusals back off exponentially, and are logged once per episode;
//   - an event with ChildShards (or no continuation sequence number) ends the shard;
//   - every event stream is closed and its Err() read.
func NewFanOut(cfg FanOutConfig) Reader {
	log := cfg.Log.WithFields(map[string]any{"shardId": cfg.ShardID})
	return &fanOut{
		cfg:      cfg,
		log:      log,
		failures: episode.New(log, awserr.PermissionRead),
		refused:  backoff.Exponential{Initial: subscribeRetryFirst, Max: subscribeRetryMax},
	}
}

func (f *fanOut) Run(ctx context.Context, out chan<- Batch) error {
	var (
		continuation string // where the last event left the shard
		lastCall     time.Time
		wait         time.Duration
	)
	typ, seq, _ := f.cfg.Start.from("")
	f.log.Infof("Fan-out reader started (%s %s)", typ, seq)
	for {
		if !backoff.Sleep(ctx, max(wait, minSubscribeGap-time.Since(lastCall))) {
			f.log.Debugf("Fan-out reader stopped: its context ended")
			return fmt.Errorf("shard %s: %w", f.cfg.ShardID, ErrStopped)
		}
		lastCall = time.Now()
		ended, events, err := f.subscribe(ctx, continuation, out, &continuation)
		switch {
		case ended:
			f.log.Infof("Fan-out reader stopped: the shard was read to its end")
			return nil
		case ctx.Err() != nil:
			f.log.Debugf("Fan-out reader stopped: its context ended")
			return fmt.Errorf("shard %s: %w", f.cfg.ShardID, ErrStopped)
		}
		var inUseErr *types.ResourceInUseException
		var apiErr smithy.APIError
		switch {
		case err == nil:
			// The subscription ran its course (5 minutes on AWS): subscribe again at once.
			wait = 0
		case errors.As(err, &inUseErr):
			// The old subscription, typically the one whose connection just dropped, goes away within
			// 5 s on AWS: retrying at the cadence AWS allows (minSubscribeGap, kept by the loop) resumes
			// as soon as it has gone, with at most 5 extra calls.
			f.failures.Failed("Subscribing to the shard", err, false)
			wait = 0
		case errors.As(err, &apiErr):
			f.failures.Failed("Subscribing to the shard", err, awserr.OperatorMustAct(err))
			wait = f.refused.Next()
		case events > 0:
			// The connection dropped mid-subscription: AWS allows a new one a second after the last.
			f.log.Debugf("Subscription ended: %v; subscribing again", err)
			wait = 0
		default:
			f.failures.Failed("Subscribing to the shard", err, false)
			wait = f.refused.Next()
		}
	}
}

// subscribe runs one subscription, sending each event's records as a batch. It returns whether the
// shard ended, how many events arrived, and why the subscription ended (nil: it ran its course).
func (f *fanOut) subscribe(ctx context.Context, after string, out chan<- Batch, continuation *string) (ended bool, events int, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	typ, seq, atTime := f.cfg.Start.from(after)
	start := &types.StartingPosition{Type: typ}
	if seq != "" {
		start.SequenceNumber = aws.String(seq)
	}
	if atTime {
		start.Timestamp = aws.Time(f.cfg.Start.Timestamp)
	}
	res, err := f.cfg.Client.SubscribeToShard(ctx, &kinesis.SubscribeToShardInput{
		ConsumerARN: aws.String(f.cfg.ConsumerARN), ShardId: aws.String(f.cfg.ShardID), StartingPosition: start,
	})
	if err != nil {
		return false, 0, fmt.Errorf("kinesis binding error: shard %s: SubscribeToShard %s %s: %w", f.cfg.ShardID, typ, seq, awserr.Classify(err))
	}
	stream := res.GetStream()
	defer stream.Close()
	for {
		select {
		case <-ctx.Done():
			return false, events, ctx.Err()
		case ev, ok := <-stream.Events():
			if !ok {
				if err := stream.Err(); err != nil {
					return false, events, fmt.Errorf("kinesis binding error: shard %s: subscription: %w", f.cfg.ShardID, awserr.Classify(err))
				}
				return false, events, nil
			}
			e, isRecords := ev.(*types.SubscribeToShardEventStreamMemberSubscribeToShardEvent)
			if !isRecords {
				continue
			}
			if events++; events == 1 {
				f.failures.Recovered("Subscribing to the shard")
				f.refused.Reset()
			}
			v := e.Value
			b := Batch{Records: v.Records, MillisBehindLatest: aws.ToInt64(v.MillisBehindLatest), End: len(v.ChildShards) > 0 || v.ContinuationSequenceNumber == nil}
			select {
			case out <- b:
			case <-ctx.Done():
				return false, events, ctx.Err()
			}
			if v.ContinuationSequenceNumber != nil {
				*continuation = *v.ContinuationSequenceNumber
			}
			if b.End {
				return true, events, nil
			}
		}
	}
}
