package kinesis

import (
	"context"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/dapr-kinesis/kinesis/internal/backoff"
)

// minGetRecordsGap spaces one shard's GetRecords calls: AWS allows 5 per second per shard. A little
// over 200 ms, so that KCL's own limiter (5 calls per window, a window ends after more than 1 s) never
// finds the fifth call of a window too early.
const minGetRecordsGap = 205 * time.Millisecond

// iteratorMaxAge is how long an unused shard iterator stays valid (AWS: 5 minutes).
const iteratorMaxAge = 5 * time.Minute

// getRecordsPacer spreads each shard's GetRecords calls evenly. KCL reads again at once after a
// non-empty answer and, having made 5 calls within a second, sleeps out the rest of it: on a busy
// shard a record could wait most of a second. Paced at 5 calls a second, none waits longer than a
// gap. Shards are recognised by their iterators: each GetRecords answer carries the shard's next one.
type getRecordsPacer struct {
	mu      sync.Mutex
	shardOf map[string]iteratorOrigin // iterator → its shard
	last    map[string]time.Time      // shard → start of its last GetRecords call
}

type iteratorOrigin struct {
	shardID string
	issued  time.Time
}

func newGetRecordsPacer() *getRecordsPacer {
	return &getRecordsPacer{shardOf: map[string]iteratorOrigin{}, last: map[string]time.Time{}}
}

// issued records that iterator reads shardID.
func (p *getRecordsPacer) issued(iterator *string, shardID string) {
	if iterator == nil || shardID == "" {
		return
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shardOf[*iterator] = iteratorOrigin{shardID: shardID, issued: now}
	if len(p.shardOf) > 2*len(p.last)+64 {
		// Iterators of ended shard consumers are never used again; they expire anyway.
		for it, o := range p.shardOf {
			if now.Sub(o.issued) > iteratorMaxAge {
				delete(p.shardOf, it)
			}
		}
	}
}

// wait delays a GetRecords call on iterator until its shard's previous call is minGetRecordsGap
// old, and returns the shard (empty when unknown) for issued.
func (p *getRecordsPacer) wait(ctx context.Context, iterator *string) string {
	p.mu.Lock()
	o, ok := p.shardOf[aws.ToString(iterator)]
	delete(p.shardOf, aws.ToString(iterator))
	var until time.Time
	if ok {
		until = p.last[o.shardID].Add(minGetRecordsGap)
		if now := time.Now(); until.Before(now) {
			until = now
		}
		p.last[o.shardID] = until
	}
	p.mu.Unlock()
	if ok {
		backoff.Sleep(ctx, time.Until(until))
	}
	return o.shardID
}
