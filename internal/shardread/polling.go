package shardread

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
	"github.com/dapr-kinesis/kinesis/internal/episode"
	"github.com/dapr/kit/logger"
)

const (
	// minGetRecordsGap keeps a shard within AWS's 5 GetRecords calls per second.
	minGetRecordsGap = 200 * time.Millisecond
	// heartbeatEvery is how often a caught-up shard sends an empty batch, so that its lag is seen.
	heartbeatEvery = time.Second

	pollRetryFirst = 200 * time.Millisecond
	pollRetryMax   = 5 * time.Second
)

type polling struct {
	cfg PollingConfig
	log logger.Logger
}

// NewPolling returns a reader that polls GetRecords:
//   - iterator from Start: AFTER_SEQUENCE_NUMBER, AT_SEQUENCE_NUMBER for "seq:sub", TRIM_HORIZON,
//     or Initial;
//   - reads again at once (within the 200 ms spacing) while the shard is behind (MillisBehindLatest
//     > 0, or a full batch); waits PollInterval when caught up;
//   - an expired iterator is renewed AFTER the last record read (or from Start if none yet);
//   - throttling and other failures back off exponentially, logged once per episode;
//   - a nil NextShardIterator ends the shard.
func NewPolling(cfg PollingConfig) Reader {
	return &polling{cfg: cfg, log: cfg.Log.WithFields(map[string]any{"shardId": cfg.ShardID})}
}

func (p *polling) Run(ctx context.Context, out chan<- Batch) error {
	var (
		iterator string
		lastRead string // sequence number of the last record read in this tenure
		lastCall time.Time
		lastSent time.Time
		retry    = backoff.Exponential{Initial: pollRetryFirst, Max: pollRetryMax}
		failures = episode.New(p.log, awserr.PermissionRead)
	)
	stopped := func() error {
		p.log.Debugf("Polling reader stopped: its context ended")
		return fmt.Errorf("shard %s: %w", p.cfg.ShardID, ErrStopped)
	}
	typ, seq, _ := p.cfg.Start.from("")
	p.log.Infof("Polling reader started (%s %s)", typ, seq)
	for {
		if ctx.Err() != nil {
			return stopped()
		}
		if iterator == "" {
			it, err := p.iterator(ctx, lastRead)
			if err != nil {
				if ctx.Err() != nil {
					return stopped()
				}
				failures.Failed("GetShardIterator", err, awserr.OperatorMustAct(err))
				if !backoff.Sleep(ctx, retry.Next()) {
					return stopped()
				}
				continue
			}
			iterator = it
		}
		if !backoff.Sleep(ctx, minGetRecordsGap-time.Since(lastCall)) {
			return stopped()
		}
		lastCall = time.Now()
		res, err := p.cfg.Client.GetRecords(ctx, &kinesis.GetRecordsInput{
			ShardIterator: aws.String(iterator),
			Limit:         aws.Int32(int32(p.cfg.MaxRecords)), //nolint:gosec // G115: metadata parsing keeps maxRecords within 1..10,000
		})
		var expired *types.ExpiredIteratorException
		switch {
		case ctx.Err() != nil:
			return stopped()
		case errors.As(err, &expired):
			// Unused for 5 minutes (the delivery was slow): read again after the last record read.
			p.log.Debugf("Shard iterator expired; renewing it after sequence number %q", lastRead)
			iterator = ""
			continue
		case err != nil:
			failures.Failed("GetRecords", fmt.Errorf("kinesis binding error: shard %s: GetRecords: %w", p.cfg.ShardID, awserr.Classify(err)), awserr.OperatorMustAct(err))
			if !backoff.Sleep(ctx, retry.Next()) {
				return stopped()
			}
			continue
		}
		failures.Recovered("Reading the shard")
		retry.Reset()

		b := Batch{Records: res.Records, MillisBehindLatest: aws.ToInt64(res.MillisBehindLatest), End: res.NextShardIterator == nil}
		if n := len(res.Records); n > 0 {
			lastRead = aws.ToString(res.Records[n-1].SequenceNumber)
		}
		if len(b.Records) > 0 || b.End || time.Since(lastSent) >= heartbeatEvery {
			select {
			case out <- b:
				lastSent = time.Now()
			case <-ctx.Done():
				return stopped()
			}
		}
		if b.End {
			p.log.Infof("Polling reader stopped: the shard was read to its end")
			return nil
		}
		iterator = aws.ToString(res.NextShardIterator)
		behind := b.MillisBehindLatest > 0 || len(res.Records) >= p.cfg.MaxRecords
		// Counted from the response, not from the call: a server slowed by many shards' polls is then
		// asked less often, instead of being kept queued (64 shards on kinesis-local: p50 half).
		if !behind && !backoff.Sleep(ctx, p.cfg.PollInterval) {
			return stopped()
		}
	}
}

func (p *polling) iterator(ctx context.Context, lastRead string) (string, error) {
	typ, seq, atTime := p.cfg.Start.from(lastRead)
	in := &kinesis.GetShardIteratorInput{
		StreamName: aws.String(p.cfg.StreamName), ShardId: aws.String(p.cfg.ShardID), ShardIteratorType: typ,
	}
	if seq != "" {
		in.StartingSequenceNumber = aws.String(seq)
	}
	if atTime {
		in.Timestamp = aws.Time(p.cfg.Start.Timestamp)
	}
	res, err := p.cfg.Client.GetShardIterator(ctx, in)
	if err != nil {
		return "", fmt.Errorf("kinesis binding error: shard %s: GetShardIterator %s %s: %w", p.cfg.ShardID, typ, seq, awserr.Classify(err))
	}
	return aws.ToString(res.ShardIterator), nil
}
