package producer

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	smithy "github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/backoff"
)

// PutRecords limits (AWS documentation). The 5 MiB count data and partition keys, not hash keys.
const (
	MaxBatchRecords = 500
	MaxBatchBytes   = 5 << 20
)

// Who may touch a pendingRecord. A record is answered exactly once: by the sender (done) or, when its
// caller gave up before the record went out, by nobody (abandoned).
const (
	statePending   int32 = iota // not on the wire; the sender may claim it, the caller may abandon it
	stateInFlight               // in a request; only the sender changes it
	stateDone                   // answered through res
	stateAbandoned              // the caller left before it was sent: never sent, never answered
)

// pendingRecord is one record waiting for its PutRecords result.
type pendingRecord struct {
	rec      *record
	deadline time.Time // the caller's; no retry starts after it
	state    atomic.Int32
	lastErr  error // the retryable error of the last attempt; written by the sender before it sets pending
	res      chan putResult
}

// putResult is a record's outcome. err is the bare cause; callers add their own context.
type putResult struct {
	Result
	err error
}

func newPendingRecord(rec *record, deadline time.Time) *pendingRecord {
	return &pendingRecord{rec: rec, deadline: deadline, res: make(chan putResult, 1)}
}

// answer delivers the outcome; only the goroutine that moved the record out of pending may call it.
func (pr *pendingRecord) answer(r putResult) {
	pr.state.Store(stateDone)
	pr.res <- r
}

// giveUp answers a record that is still pending, unless its caller abandoned it first.
func (pr *pendingRecord) giveUp(err error) {
	if pr.state.CompareAndSwap(statePending, stateDone) {
		pr.res <- putResult{err: err}
	}
}

// wait returns the record's outcome or, once ctx ends, an error that says whether it was written.
func (pr *pendingRecord) wait(ctx context.Context) putResult {
	select {
	case r := <-pr.res:
		return r
	case <-ctx.Done():
	}
	if pr.state.CompareAndSwap(statePending, stateAbandoned) {
		// Reading lastErr is safe: the sender wrote it before it stored statePending.
		return putResult{err: pr.gaveUp(context.Cause(ctx))}
	}
	select {
	case r := <-pr.res: // answered while ctx ended: the real outcome is better than a guess
		return r
	default:
	}
	return putResult{err: maybeWritten(fmt.Errorf("gave up waiting for the PutRecords answer: %w", context.Cause(ctx)))}
}

// gaveUp is the error of a record that was not written because cause stopped it from being (re)sent.
func (pr *pendingRecord) gaveUp(cause error) error {
	if pr.lastErr == nil {
		return notWritten(fmt.Errorf("not sent: %w", cause))
	}
	return notWritten(fmt.Errorf("%w (gave up retrying: %w)", pr.lastErr, cause))
}

// unconfirmedError is a failed put that tells whether the record may still have been written, so a
// caller knows whether retrying risks a duplicate.
type unconfirmedError struct {
	err          error
	maybeWritten bool
}

func (e *unconfirmedError) Error() string {
	if e.maybeWritten {
		return e.err.Error() + " (the record may have been written)"
	}
	return e.err.Error() + " (the record was not written)"
}

func (e *unconfirmedError) Unwrap() error { return e.err }

func notWritten(err error) error   { return &unconfirmedError{err: err} }
func maybeWritten(err error) error { return &unconfirmedError{err: err, maybeWritten: true} }

// requestError classifies a failed request and, when ctx ended it, says why ctx ended (the binding
// closing, say), which the SDK's plain context.Canceled hides.
func requestError(ctx context.Context, err error) error {
	err = awserr.Classify(err)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
		err = fmt.Errorf("%w (%w)", err, cause)
	}
	return err
}

// requestOutcome says whether a failed request may have written its records: a rejection (HTTP 4xx)
// did not; a lost connection, a timeout or a server error may have. A KMS key problem says what to
// fix.
func requestOutcome(err error) error {
	err = awserr.WithKMSAdvice(err, awserr.PermissionWrite)
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil && re.HTTPStatusCode() >= 400 && re.HTTPStatusCode() < 500 {
		return notWritten(err)
	}
	return maybeWritten(err)
}

// recordError is the failure of one entry of a PutRecords request.
type recordError struct {
	code    string
	message string
}

func (e *recordError) Error() string { return e.code + ": " + e.message }

// ErrorCode, ErrorMessage and ErrorFault make an entry's failure read as the service's error would
// (smithy.APIError), for the code that names KMS key problems.
func (e *recordError) ErrorCode() string             { return e.code }
func (e *recordError) ErrorMessage() string          { return e.message }
func (e *recordError) ErrorFault() smithy.ErrorFault { return smithy.FaultServer }

// Is lets errors.Is(err, awserr.ErrThrottled) see throttled entries as it sees throttled requests.
func (e *recordError) Is(target error) bool {
	return target == awserr.ErrThrottled && (e.code == codeThroughputExceeded || e.code == codeKMSThrottling)
}

const (
	codeThroughputExceeded = "ProvisionedThroughputExceededException"
	codeKMSThrottling      = "KMSThrottlingException"
	codeInternalFailure    = "InternalFailure"
)

// retryableEntryCode reports whether an entry that failed with code was not written and may succeed
// when sent again.
func retryableEntryCode(code string) bool {
	switch code {
	case codeThroughputExceeded, codeKMSThrottling, codeInternalFailure:
		return true
	}
	return false
}

// send puts entries until each has an answer: its shard and sequence number, its own error, or the
// reason retrying stopped. Only entries that failed with a retryable code are sent again, after a
// backoff; entries whose callers left before being sent are skipped. ctx bounds the whole send.
func (p *Producer) send(ctx context.Context, entries []*pendingRecord) {
	wait := throttleRetryFirst
	for {
		live := claim(entries)
		if len(live) == 0 {
			return
		}
		retry := p.sendOnce(ctx, live)
		if len(retry) == 0 {
			return
		}
		entries = retry
		if !backoff.Sleep(ctx, backoff.Jitter(wait)) {
			for _, pr := range entries {
				pr.giveUp(pr.gaveUp(context.Cause(ctx)))
			}
			return
		}
		wait = min(2*wait, throttleRetryMax)
	}
}

// claim moves the entries still pending into flight, skipping those their callers abandoned and
// giving up on those past their deadline.
func claim(entries []*pendingRecord) []*pendingRecord {
	now := time.Now()
	live := entries[:0:0]
	for _, pr := range entries {
		if !pr.deadline.IsZero() && now.After(pr.deadline) {
			pr.giveUp(pr.gaveUp(context.DeadlineExceeded))
			continue
		}
		if pr.state.CompareAndSwap(statePending, stateInFlight) {
			live = append(live, pr)
		}
	}
	return live
}

// sendOnce makes one request for live and answers every entry except the retryable failures, which
// it returns to pending.
func (p *Producer) sendOnce(ctx context.Context, live []*pendingRecord) (retry []*pendingRecord) {
	if len(live) == 1 && live[0].rec.Size() > MaxBatchBytes {
		// Only a stream raised above 5 MiB per record gets here; PutRecords cannot carry it.
		return p.sendSingle(ctx, live[0])
	}
	if p.aggregating() {
		return p.sendAggregated(ctx, live)
	}
	// Records gathered for aggregation, before the stream said it places records itself, may be
	// more than one plain request carries.
	for _, req := range split(live, plainBatch) {
		if err := ctx.Err(); err != nil {
			retry = append(retry, requeue(req, context.Cause(ctx))...)
			continue
		}
		retry = append(retry, p.sendPlain(ctx, req)...)
	}
	return retry
}

// sendPlain makes one PutRecords request of live, each record as it is.
func (p *Producer) sendPlain(ctx context.Context, live []*pendingRecord) (retry []*pendingRecord) {
	out, err := p.putRecords(ctx, putRecordsInput(p.stream, live))
	if err != nil {
		return failRequest(live, err)
	}
	for i, pr := range live {
		e := &out.Records[i]
		switch again, failure := entryResult(e); {
		case failure == nil:
			pr.answer(putResult{Result: Result{ShardID: aws.ToString(e.ShardId), SequenceNumber: aws.ToString(e.SequenceNumber)}})
		case again:
			retry = append(retry, requeue1(pr, failure))
		default:
			p.noteRejection(failure)
			pr.answer(putResult{err: failure})
		}
	}
	return retry
}

// putRecords makes one PutRecords request. Its error is classified (requestError); an answer whose
// entries do not match the request's is one.
func (p *Producer) putRecords(ctx context.Context, in *kinesis.PutRecordsInput) (*kinesis.PutRecordsOutput, error) {
	out, err := p.client.PutRecords(ctx, in)
	if err == nil && len(out.Records) != len(in.Records) {
		err = fmt.Errorf("PutRecords answered %d entries for %d records", len(out.Records), len(in.Records))
	}
	if err != nil {
		err = requestError(ctx, err)
		p.noteRejection(err)
		return nil, err
	}
	return out, nil
}

// noteRejection asks the stream again after a put it refused as invalid: the likeliest cause of a
// refusal of records this producer validated is a stream that changed how it places records (a
// keyless record after AUTO was switched off, SequenceNumberForOrdering after it was switched on).
func (p *Producer) noteRejection(err error) {
	switch ErrorCode(err) {
	case "InvalidArgumentException", "ValidationException", "SerializationException":
		p.info.Invalidate()
	}
}

// failRequest answers the records of a request that failed as a whole: one throttled wrote nothing,
// and its records are returned to be sent again; any other failure is each record's answer.
func failRequest(live []*pendingRecord, err error) (retry []*pendingRecord) {
	if awserr.IsRetryable(err) {
		return requeue(live, err)
	}
	for _, pr := range live {
		pr.answer(putResult{err: requestOutcome(err)})
	}
	return nil
}

// entryResult is the outcome of one PutRecords entry: a nil error when it was written; otherwise
// the entry's error, and whether it may be sent again (it was not written).
func entryResult(e *types.PutRecordsResultEntry) (again bool, err error) {
	code := aws.ToString(e.ErrorCode)
	if code == "" {
		return false, nil
	}
	failure := &recordError{code: code, message: aws.ToString(e.ErrorMessage)}
	if retryableEntryCode(code) {
		return true, failure
	}
	return false, notWritten(awserr.WithKMSAdvice(failure, awserr.PermissionWrite))
}

func (p *Producer) sendSingle(ctx context.Context, pr *pendingRecord) []*pendingRecord {
	out, err := p.client.PutRecord(ctx, putRecordInput(p.stream, pr.rec))
	if err != nil {
		err = requestError(ctx, err)
		p.noteRejection(err)
		return failRequest(pr.one(), err)
	}
	pr.answer(putResult{Result: Result{ShardID: aws.ToString(out.ShardId), SequenceNumber: aws.ToString(out.SequenceNumber)}})
	return nil
}

func (pr *pendingRecord) one() []*pendingRecord { return []*pendingRecord{pr} }

func requeue(live []*pendingRecord, err error) []*pendingRecord {
	for _, pr := range live {
		requeue1(pr, err)
	}
	return live
}

// requeue1 returns a record that was not written to pending so that its caller may still abandon it.
func requeue1(pr *pendingRecord, err error) *pendingRecord {
	pr.lastErr = err
	pr.state.Store(statePending)
	return pr
}

func putRecordsInput(stream string, live []*pendingRecord) *kinesis.PutRecordsInput {
	entries := make([]types.PutRecordsRequestEntry, len(live))
	for i, pr := range live {
		entries[i] = putRecordsEntry(pr.rec)
	}
	return &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries}
}

// putRecordsEntry is rec as an entry of a PutRecords request.
func putRecordsEntry(rec *record) types.PutRecordsRequestEntry {
	entry := types.PutRecordsRequestEntry{Data: rec.Data, PartitionKey: optional(rec.PartitionKey)}
	if rec.ExplicitHashKey != "" {
		entry.ExplicitHashKey = aws.String(rec.ExplicitHashKey)
	}
	return entry
}

func putRecordInput(stream string, rec *record) *kinesis.PutRecordInput {
	in := &kinesis.PutRecordInput{
		StreamName:   aws.String(stream),
		Data:         rec.Data,
		PartitionKey: optional(rec.PartitionKey),
	}
	if rec.ExplicitHashKey != "" {
		in.ExplicitHashKey = aws.String(rec.ExplicitHashKey)
	}
	if rec.SequenceNumberForOrdering != "" {
		in.SequenceNumberForOrdering = aws.String(rec.SequenceNumberForOrdering)
	}
	return in
}

// optional is s, or nil for "": a record without a partition key (on a stream that places records
// itself) is sent without one.
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

// ErrorCode names a record's failure in a word, for per-record results: the entry's or the
// request's AWS error code, or why the binding gave up.
func ErrorCode(err error) string {
	var (
		re     *recordError
		apiErr smithy.APIError
	)
	switch {
	case errors.As(err, &re):
		return re.code
	case errors.As(err, &apiErr):
		return apiErr.ErrorCode()
	case errors.Is(err, ErrClosed):
		return "BindingClosed"
	case errors.Is(err, context.DeadlineExceeded):
		return "DeadlineExceeded"
	case errors.Is(err, context.Canceled):
		return "Canceled"
	}
	return "RequestFailed"
}
