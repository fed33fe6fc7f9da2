// Package queue is the input side's queue mode: it consumes a stream through a Kinesis queue
// (AWS, November 2026), which keeps each record's state itself. No shard is leased and nothing is
// checkpointed: a replica receives records (ReceiveQueueRecords), calls the handler, and
// acknowledges each record whose call succeeded (AcknowledgeQueueRecords); a record not
// acknowledged within the queue's visibility timeout is delivered again, to any replica. So as many
// replicas as the work needs can read one stream, and a record that keeps failing blocks nothing;
// the price is order: there is none, not even per key.
//
// What it owns, by file:
//   - setup.go: which queue: the one named by ARN, or the one of a name on the stream, created when
//     missing (replicas starting together end on one), waited for until ACTIVE;
//   - consumer.go: the Consumer: long polls that never hold more records than there are free handler
//     slots, one handler call per record, and Stop;
//   - record.go: one record's trip: the handler call, its visibility kept while it runs, and then an
//     acknowledgement or a retry after a backoff;
//   - acks.go: acknowledgements gathered into calls of up to 10;
//   - metadata.go: the read metadata a handler gets.
//
// The root package's input.go starts a Consumer for mode queue; nothing here knows Dapr's metadata.
package queue
