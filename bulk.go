package kinesis

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/dapr/components-contrib/bindings"
)

// Request metadata and response keys of bulkCreate.
const (
	reqDataEncoding     = "dataEncoding"
	dataEncodingJSON    = "json"
	dataEncodingBase64  = "base64"
	respRecordCount     = "recordCount"
	respFailedCount     = "failedRecordCount"
	codeInvalidEntry    = "InvalidEntry"
	bulkContentTypeJSON = "application/json"
)

// bulkEntry is one element of bulkCreate's JSON array. Data is any JSON value, written as its JSON
// text (as create writes a request's data), or, with dataEncoding=base64, a base64 string whose
// bytes are written.
type bulkEntry struct {
	Data            json.RawMessage `json:"data"`
	PartitionKey    string          `json:"partitionKey"`
	ExplicitHashKey string          `json:"explicitHashKey"`
}

// bulkResult is one element of bulkCreate's response, in request order.
type bulkResult struct {
	ShardID        string `json:"shardId,omitempty"`
	SequenceNumber string `json:"sequenceNumber,omitempty"`
	// SubSequenceNumber is the entry's index in the KPL aggregate it went out in; absent for an
	// entry written as a record of its own.
	SubSequenceNumber *int   `json:"subSequenceNumber,omitempty"`
	ErrorCode         string `json:"errorCode,omitempty"`
	ErrorMessage      string `json:"errorMessage,omitempty"`
}

// bulkRequest is a parsed bulkCreate: records[i] is nil where results[i] already holds its error.
type bulkRequest struct {
	records []*record
	results []bulkResult
}

// parseBulkRequest decodes the payload. A payload that is not a JSON array is an error and nothing
// is sent; an element that is not a valid record is reported in its own result and not sent.
func parseBulkRequest(data []byte, md map[string]string, maxRecordSize int) (*bulkRequest, error) {
	encoding := strings.ToLower(md[reqDataEncoding])
	switch encoding {
	case "":
		encoding = dataEncodingJSON
	case dataEncodingJSON, dataEncodingBase64:
	default:
		return nil, fmt.Errorf("request metadata '%s' must be %s or %s, got %q", reqDataEncoding, dataEncodingJSON, dataEncodingBase64, md[reqDataEncoding])
	}
	if md[reqSequenceNumberForOrdering] != "" {
		return nil, fmt.Errorf("request metadata '%s' is not supported by %s (PutRecords has no such field); use create", reqSequenceNumberForOrdering, bulkCreateOperation)
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(data, &elems); err != nil || !bytes.HasPrefix(bytes.TrimSpace(data), []byte("[")) {
		if err == nil {
			err = errors.New("not an array")
		}
		return nil, fmt.Errorf("%s data must be a JSON array of records: %w", bulkCreateOperation, err)
	}

	req := &bulkRequest{records: make([]*record, len(elems)), results: make([]bulkResult, len(elems))}
	for i, elem := range elems {
		rec, err := parseBulkEntry(elem, md, encoding, maxRecordSize)
		if err != nil {
			req.results[i] = bulkResult{ErrorCode: codeInvalidEntry, ErrorMessage: err.Error()}
			continue
		}
		req.records[i] = rec
	}
	return req, nil
}

// parseBulkEntry validates one element. Request metadata partitionKey and explicitHashKey are the
// defaults for elements that set none.
func parseBulkEntry(elem json.RawMessage, md map[string]string, encoding string, maxRecordSize int) (*record, error) {
	var e bulkEntry
	dec := json.NewDecoder(bytes.NewReader(elem))
	dec.DisallowUnknownFields() // a misspelt "partitionkey" must not silently become a random key
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("not a record object: %w", err)
	}
	if e.Data == nil {
		return nil, errors.New("'data' is required")
	}
	rec := &record{data: e.Data}
	if encoding == dataEncodingBase64 {
		var s string
		if err := json.Unmarshal(e.Data, &s); err != nil {
			return nil, errors.New("'data' must be a base64 string (dataEncoding is base64)")
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("'data' is not valid base64: %w", err)
		}
		rec.data = b
	}
	pk, hk := e.PartitionKey, e.ExplicitHashKey
	if pk == "" {
		pk = md[reqPartitionKey]
	}
	if hk == "" {
		hk = md[reqExplicitHashKey]
	}
	if err := rec.setKeys(pk, hk); err != nil {
		return nil, err
	}
	if err := rec.checkSize(maxRecordSize); err != nil {
		return nil, err
	}
	return rec, nil
}

// chunks splits records into PutRecords-sized groups, in order; with aggregation, into groups
// whose aggregates fill a request.
func (p *producer) chunks(records []*pendingRecord) [][]*pendingRecord {
	var out [][]*pendingRecord
	cur := p.newBatch()
	for _, pr := range records {
		if len(cur.entries) > 0 && !cur.fits(pr) {
			out = append(out, cur.entries)
			cur = p.newBatch()
		}
		cur.add(pr)
	}
	if len(cur.entries) > 0 {
		out = append(out, cur.entries)
	}
	return out
}

func (p *producer) bulkCreate(ctx context.Context, req *bindings.InvokeRequest) (*bindings.InvokeResponse, error) {
	leave, err := p.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	ctx, cancel := p.callContext(ctx)
	defer cancel()

	br, err := parseBulkRequest(req.Data, req.Metadata, p.recordSizeLimit(ctx))
	if err != nil {
		return nil, fmt.Errorf("kinesis binding error: %w", err)
	}
	deadline, _ := ctx.Deadline()
	pending := make([]*pendingRecord, 0, len(br.records))
	index := make([]int, 0, len(br.records)) // pending[k] answers results[index[k]]
	for i, rec := range br.records {
		if rec != nil {
			pending = append(pending, newPendingRecord(rec, deadline))
			index = append(index, i)
		}
	}

	if p.aggregate {
		p.place(ctx, br.records...)
	}
	p.sendChunks(ctx, p.chunks(pending))

	failed := 0
	for k, pr := range pending {
		if pr.state.Load() == statePending { // its chunk never got a request slot before ctx ended
			pr.giveUp(pr.gaveUp(context.Cause(ctx)))
		}
		res := <-pr.res
		br.results[index[k]] = bulkResult{ShardID: res.shardID, SequenceNumber: res.sequenceNumber}
		if res.aggregated {
			br.results[index[k]].SubSequenceNumber = ptr(res.sub)
		}
		if res.err != nil {
			br.results[index[k]] = bulkResult{ErrorCode: errorCode(res.err), ErrorMessage: res.err.Error()}
		}
	}
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
	if ctx.Err() != nil && failed > 0 {
		return resp, fmt.Errorf("kinesis binding error: %s on stream %q ended before every record was confirmed (%d of %d failed; see each entry for whether it may have been written): %w",
			bulkCreateOperation, p.meta.StreamName, failed, len(br.results), context.Cause(ctx))
	}
	return resp, nil
}

// sendChunks sends the chunks concurrently within the producer's request slots and returns when
// every chunk has been answered or ctx has ended. The goroutines belong to this call: they end with
// it because their requests are bound to ctx.
func (p *producer) sendChunks(ctx context.Context, groups [][]*pendingRecord) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, group := range groups {
		select {
		case p.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.releaseSlot()
			p.send(ctx, group)
		}()
	}
}

func ptr[T any](v T) *T { return &v }
