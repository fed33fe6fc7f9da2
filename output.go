package kinesis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/producer"
	"github.com/dapr/components-contrib/bindings"
)

// newProducer builds the output side from the metadata; it sends nothing until the first call.
func (a *AWSKinesis) newProducer() *producer.Producer {
	return producer.New(producer.Config{
		Client:        a.client,
		Stream:        a.meta.StreamName,
		MaxInFlight:   a.meta.MaxInFlightBatches,
		Linger:        a.meta.BatchLinger,
		Aggregate:     a.meta.Aggregation == aggregationKPL,
		CloseGrace:    a.producerCloseGrace,
		StreamRefresh: a.producerStreamRefresh,
		Log:           a.logger,
	})
}

// initDescribeTimeout bounds Init's DescribeStreamSummary, so that an unreachable endpoint delays
// daprd's start by seconds at most.
const initDescribeTimeout = 10 * time.Second

// checkAggregation refuses aggregation kpl on a stream that places records itself
// (RecordDistributionStrategy AUTO): every KCL reader of the stream would lose the aggregates'
// records without an error. A stream that cannot be described keeps today's behaviour; one switched
// to AUTO later gets plain records from the moment the producer learns it (see internal/producer).
func (a *AWSKinesis) checkAggregation(ctx context.Context) error {
	if a.meta.Aggregation != aggregationKPL {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, initDescribeTimeout)
	defer cancel()
	info, err := a.producer.Describe(ctx)
	switch {
	case err == nil && info.Auto:
		return fmt.Errorf("kinesis binding error: 'aggregation' %s cannot be used on stream %q: the stream places records itself (RecordDistributionStrategy AUTO), and KCL readers drop the records of KPL aggregates written there; set 'aggregation' to %s",
			aggregationKPL, a.meta.StreamName, aggregationNone)
	case err != nil && !errors.Is(err, ErrAccessDenied): // a denial was logged by the producer
		a.logger.Warnf("kinesis binding: cannot check how stream %q places records (kinesis:DescribeStreamSummary: %v); aggregation stays on until the stream says it places records itself", a.meta.StreamName, err)
	}
	return nil
}

// Invoke runs an output operation.
func (a *AWSKinesis) Invoke(ctx context.Context, req *bindings.InvokeRequest) (*bindings.InvokeResponse, error) {
	if req == nil {
		return nil, errNilRequest
	}
	if a.closed.Load() {
		return nil, ErrClosed
	}
	if !a.initDone.Load() {
		return nil, errors.New("kinesis binding error: Invoke before Init")
	}
	switch req.Operation {
	case bindings.CreateOperation:
		return a.create(ctx, req)
	case bulkCreateOperation:
		return a.bulkCreate(ctx, req)
	default:
		return nil, unsupportedOperation(req.Operation)
	}
}

func (a *AWSKinesis) create(ctx context.Context, req *bindings.InvokeRequest) (*bindings.InvokeResponse, error) {
	rec, err := parseCreateRequest(req.Data, req.Metadata, a.producer.Stream(ctx).Auto)
	if err != nil {
		return nil, fmt.Errorf("kinesis binding error: %w", err)
	}
	res, err := a.producer.Put(ctx, rec)
	var tooLarge *producer.RecordSizeError
	switch {
	case err == ErrClosed: //nolint:errorlint // Put returns the bare sentinel when Close came first
		return nil, ErrClosed
	case errors.As(err, &tooLarge):
		return nil, fmt.Errorf("kinesis binding error: %w", err)
	case err != nil:
		return nil, fmt.Errorf("kinesis binding error: put record on stream %q: %w", a.meta.StreamName, err)
	}
	resp := &bindings.InvokeResponse{Metadata: map[string]string{
		respShardID:        res.ShardID,
		respSequenceNumber: res.SequenceNumber,
	}}
	if res.Aggregated {
		resp.Metadata[respSubSequenceNumber] = strconv.Itoa(res.SubSequenceNumber)
	}
	return resp, nil
}

func (a *AWSKinesis) bulkCreate(ctx context.Context, req *bindings.InvokeRequest) (*bindings.InvokeResponse, error) {
	br, err := parseBulkRequest(req.Data, req.Metadata, a.producer.Stream(ctx))
	if err != nil {
		return nil, fmt.Errorf("kinesis binding error: %w", err)
	}
	outcomes, cutShort := a.producer.PutMany(ctx, br.valid())
	if outcomes == nil {
		return nil, cutShort // Close came first
	}
	br.answer(outcomes)

	failed := 0
	for _, r := range br.results {
		if r.ErrorCode != "" {
			failed++
		}
	}
	body, err := json.Marshal(br.results)
	if err != nil {
		return nil, fmt.Errorf("kinesis binding error: encoding %s results: %w", bulkCreateOperation, err)
	}
	resp := &bindings.InvokeResponse{
		Data:        body,
		ContentType: ptr(bulkContentTypeJSON),
		Metadata: map[string]string{
			respRecordCount: strconv.Itoa(len(br.results)),
			respFailedCount: strconv.Itoa(failed),
		},
	}
	// Per-entry failures are in the response; only a call cut short is an error, since daprd drops
	// the response of a failed call.
	if cutShort != nil && failed > 0 {
		return resp, fmt.Errorf("kinesis binding error: %s on stream %q ended before every record was confirmed (%d of %d failed; see each entry for whether it may have been written): %w",
			bulkCreateOperation, a.meta.StreamName, failed, len(br.results), cutShort)
	}
	return resp, nil
}
