package producer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/kpl"
	"github.com/dapr-kinesis/kinesis/internal/shardmap"
)

// KPL aggregation (metadata aggregation: kpl). User records go through the coalescer as with
// aggregation none, and the request that carries them is built differently: the records bound for
// the same open shard are packed, in the order they came, into KPL aggregated records that each fit
// the stream's maximum record size, and each aggregate is put with the partition key and hash key of
// its first record. Kinesis therefore places every aggregate on the shard its records would have
// gone to on their own, and a key's records reach that shard in the order they were sent. A group
// of one record, and a record too large to share, is put as a plain record.
//
// Records are grouped by the shard map from ListShards. When a put lands on a shard the map did not
// predict (the stream was resharded), the map is reloaded. Without a map (ListShards denied or
// failing) records are grouped by their hash key alone, which places them exactly but packs fewer.

// ShardMapMinInterval bounds how often a stream in the middle of a reshard is listed.
const ShardMapMinInterval = 250 * time.Millisecond

// aggregating reports whether records are packed now: aggregation is on and the stream places
// records by their keys. On a stream that places records itself (AUTO) an aggregate would land on a
// shard its records' keys do not belong to, and KCL's de-aggregation drops such records without an
// error; so records go out plain there, from the moment the producer learns it.
func (p *Producer) aggregating() bool {
	if !p.aggregate {
		return false
	}
	if !p.info.Current().Auto {
		return true
	}
	if !p.autoWarned.Swap(true) {
		p.logger.Warnf("kinesis binding: stream %q places records itself (RecordDistributionStrategy AUTO), where KPL aggregates would be lost to KCL readers: aggregation is off, records go out plain", p.stream)
	}
	return false
}

// place sets each record's hash key and predicted shard, loading the shard map first if needed.
func (p *Producer) place(ctx context.Context, recs ...*record) {
	m := p.shardMap(ctx)
	for _, r := range recs {
		if r == nil {
			continue
		}
		r.hash = hashOf(r)
		p.predict(m, r)
	}
}

// predict sets r.shard from m, and marks m out of date when it has no shard for r.
func (p *Producer) predict(m *shardmap.Map, r *record) {
	r.shard = ""
	if m == nil {
		return
	}
	s, ok := m.Find(r.hash)
	if !ok {
		p.shards.Invalidate()
		return
	}
	r.shard = s.ID
}

// shardMap is the stream's current shard map, or nil when none can be had.
func (p *Producer) shardMap(ctx context.Context) *shardmap.Map {
	if p.shardsDenied.Load() {
		return nil
	}
	m, err := p.shards.Get(ctx)
	if err != nil {
		err = awserr.Classify(err)
		denied := errors.Is(err, awserr.ErrAccessDenied)
		if denied {
			p.shardsDenied.Store(true)
		}
		if !p.shardsWarned.Swap(true) || denied {
			p.logger.Warnf("kinesis binding: aggregation: cannot list the shards of stream %q (%v); records are grouped by partition key only, which packs fewer per aggregate", p.stream, err)
		} else {
			p.logger.Debugf("kinesis binding: aggregation: listing the shards of stream %q failed again: %v", p.stream, err)
		}
	}
	if m != nil && m.Len() == 0 {
		return nil
	}
	return m
}

// hashOf is the hash key Kinesis places r by.
func hashOf(r *record) shardmap.Key {
	if r.ExplicitHashKey != "" {
		if k, err := shardmap.ParseKey(r.ExplicitHashKey); err == nil { // validated when parsed
			return k
		}
	}
	return shardmap.KeyOf(r.PartitionKey)
}

// aggregateLimit is the largest record an aggregate may become: the stream's maximum record size,
// and never more than a PutRecords request carries.
func (p *Producer) aggregateLimit() int {
	return min(p.info.Current().MaxRecordSize, MaxBatchBytes)
}

// groupKey is what records are packed together by: their predicted shard, or, when none is
// predicted, their hash key.
type groupKey struct {
	shard string
	hash  shardmap.Key
}

func groupOf(r *record) groupKey {
	if r.shard != "" {
		return groupKey{shard: r.shard}
	}
	return groupKey{hash: r.hash}
}

// aggEntry is one entry of a PutRecords request: an aggregate of its members or, with one member,
// that record on its own.
type aggEntry struct {
	members []*pendingRecord
	agg     kpl.Aggregate
}

func (e *aggEntry) first() *record { return e.members[0].rec }

// size is what the entry counts against the record size limit and the 5 MiB of a request.
func (e *aggEntry) size() int {
	if len(e.members) == 1 {
		return e.first().Size()
	}
	return e.agg.Size() + len(e.first().PartitionKey)
}

// sizeWith is size after adding r.
func (e *aggEntry) sizeWith(r *record) int {
	return e.agg.SizeWith(r.PartitionKey, r.ExplicitHashKey, len(r.Data)) + len(e.first().PartitionKey)
}

func (e *aggEntry) add(pr *pendingRecord) {
	e.members = append(e.members, pr)
	e.agg.Add(pr.rec.PartitionKey, pr.rec.ExplicitHashKey, pr.rec.Data)
}

// packer packs user records, in the order added, into PutRecords entries: each group's records go
// into its open aggregate until the next one would not fit the limit, which starts another. Entries
// are kept in the order they were started, so a group's aggregates keep its records' order.
type packer struct {
	limit   int
	open    map[groupKey]*aggEntry
	entries []*aggEntry
	bytes   int // of all entries, as a request counts them
}

func newPacker(limit int) *packer {
	return &packer{limit: limit, open: map[groupKey]*aggEntry{}}
}

// cost is how many entries and bytes adding pr would add.
func (pk *packer) cost(pr *pendingRecord) (entries, bytes int) {
	if e := pk.open[groupOf(pr.rec)]; e != nil {
		if n := e.sizeWith(pr.rec); n <= pk.limit {
			return 0, n - e.size()
		}
	}
	return 1, pr.rec.Size()
}

func (pk *packer) add(pr *pendingRecord) {
	g := groupOf(pr.rec)
	e := pk.open[g]
	if e != nil && e.sizeWith(pr.rec) <= pk.limit {
		pk.bytes -= e.size()
	} else {
		e = &aggEntry{}
		pk.open[g] = e
		pk.entries = append(pk.entries, e)
	}
	e.add(pr)
	pk.bytes += e.size()
}

// requests splits the entries into PutRecords requests, in order. The coalescer and bulkCreate size
// their batches so that one request holds them; only a shard map that changed between batching and
// sending makes more.
func (pk *packer) requests() [][]*aggEntry {
	var (
		out   [][]*aggEntry
		cur   = make([]*aggEntry, 0, min(len(pk.entries), MaxBatchRecords))
		bytes int
	)
	for _, e := range pk.entries {
		if len(cur) > 0 && (len(cur) == MaxBatchRecords || bytes+e.size() > MaxBatchBytes) {
			out = append(out, cur)
			cur, bytes = nil, 0
		}
		cur = append(cur, e)
		bytes += e.size()
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// sendAggregated packs live into aggregates and puts them, answering each user record from its
// entry's outcome; it returns the records to send again. The records are grouped by the shard map
// as it is now, which may be newer than when they were batched.
func (p *Producer) sendAggregated(ctx context.Context, live []*pendingRecord) (retry []*pendingRecord) {
	m := p.shardMap(ctx)
	pk := newPacker(p.aggregateLimit())
	for _, pr := range live {
		p.predict(m, pr.rec)
		pk.add(pr)
	}
	for _, req := range pk.requests() {
		if err := ctx.Err(); err != nil {
			for _, e := range req {
				retry = append(retry, requeue(e.members, context.Cause(ctx))...)
			}
			continue
		}
		retry = append(retry, p.putAggregates(ctx, req)...)
	}
	return retry
}

// putAggregates makes one PutRecords request of entries.
func (p *Producer) putAggregates(ctx context.Context, entries []*aggEntry) (retry []*pendingRecord) {
	in := &kinesis.PutRecordsInput{StreamName: aws.String(p.stream)}
	sent := make([]*aggEntry, 0, len(entries))
	for _, e := range entries {
		entry, err := requestEntry(e)
		if err != nil {
			for _, pr := range e.members {
				pr.answer(putResult{err: notWritten(fmt.Errorf("building the KPL aggregate: %w", err))})
			}
			continue
		}
		in.Records = append(in.Records, entry)
		sent = append(sent, e)
	}
	if len(sent) == 0 {
		return nil
	}
	out, err := p.putRecords(ctx, in)
	if err != nil {
		var members []*pendingRecord
		for _, e := range sent {
			members = append(members, e.members...)
		}
		return failRequest(members, err)
	}
	for i, e := range sent {
		retry = append(retry, p.answerEntry(e, &out.Records[i])...)
	}
	return retry
}

// answerEntry answers an entry's members from its result, and reloads the shard map when the entry
// landed on a shard other than the one predicted.
func (p *Producer) answerEntry(e *aggEntry, res *types.PutRecordsResultEntry) (retry []*pendingRecord) {
	switch again, err := entryResult(res); {
	case err == nil:
		shardID := aws.ToString(res.ShardId)
		if predicted := e.first().shard; predicted != "" && predicted != shardID {
			p.logger.Debugf("kinesis binding: aggregation: a record predicted for shard %s landed on %s; reloading the shard map", predicted, shardID)
			p.shards.Invalidate()
			p.info.Invalidate() // a stream that now places records itself looks like this too
		}
		aggregated := len(e.members) > 1
		for j, pr := range e.members {
			pr.answer(putResult{Result: Result{ShardID: shardID, SequenceNumber: aws.ToString(res.SequenceNumber), Aggregated: aggregated, SubSequenceNumber: j}})
		}
	case again:
		return requeue(e.members, err)
	default:
		for _, pr := range e.members {
			pr.answer(putResult{err: err})
		}
	}
	return nil
}

// requestEntry is the PutRecords entry of e: the record itself, or the encoded aggregate under its
// first record's partition key and hash key.
func requestEntry(e *aggEntry) (types.PutRecordsRequestEntry, error) {
	first := e.first()
	if len(e.members) == 1 {
		return putRecordsEntry(first), nil
	}
	data, err := e.agg.Encode()
	if err != nil {
		return types.PutRecordsRequestEntry{}, err
	}
	return types.PutRecordsRequestEntry{
		Data:            data,
		PartitionKey:    aws.String(first.PartitionKey),
		ExplicitHashKey: aws.String(first.hash.String()),
	}, nil
}
