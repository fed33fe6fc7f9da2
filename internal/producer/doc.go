// Package producer is the output side: it writes records to one stream and answers each with where
// it went, or why not and whether it may have been written anyway. The root package's Invoke parses
// Dapr's create and bulkCreate requests into Records and calls Put and PutMany; nothing here knows
// Dapr's request types.
//
// What it owns, by file:
//   - producer.go: the Producer, its request slots (MaxInFlight), Put (one record: PutRecord, or a
//     share of a gathered PutRecords request), and Close with its grace period;
//   - batcher.go: gathering concurrent Puts into PutRecords requests while the server is busy;
//   - putmany.go: PutMany, a caller's many records in as few requests as fit, sent concurrently;
//   - putrecords.go: one request's trip: per-entry results, retries of throttled entries with
//     backoff, and each failure's word on whether the record may have been written;
//   - aggregate.go: KPL aggregation, packing records bound for the same shard (internal/shardmap
//     predicts it) into aggregated records (internal/kpl builds them);
//   - streamsize.go: the stream's maximum record size, asked once.
package producer
