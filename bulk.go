package kinesis

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/dapr-kinesis/kinesis/internal/producer"
	"github.com/dapr-kinesis/kinesis/internal/streaminfo"
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
	records []*producer.Record
	results []bulkResult
}

// parseBulkRequest decodes the payload. A payload that is not a JSON array is an error and nothing
// is sent; an element that is not a valid record is reported in its own result and not sent.
func parseBulkRequest(data []byte, md map[string]string, stream streaminfo.Info) (*bulkRequest, error) {
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

	req := &bulkRequest{records: make([]*producer.Record, len(elems)), results: make([]bulkResult, len(elems))}
	for i, elem := range elems {
		rec, err := parseBulkEntry(elem, md, encoding, stream)
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
func parseBulkEntry(elem json.RawMessage, md map[string]string, encoding string, stream streaminfo.Info) (*producer.Record, error) {
	var e bulkEntry
	dec := json.NewDecoder(bytes.NewReader(elem))
	dec.DisallowUnknownFields() // a misspelt "partitionkey" must not silently become a random key
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("not a record object: %w", err)
	}
	if e.Data == nil {
		return nil, errors.New("'data' is required")
	}
	rec := &producer.Record{Data: e.Data}
	if encoding == dataEncodingBase64 {
		var s string
		if err := json.Unmarshal(e.Data, &s); err != nil {
			return nil, errors.New("'data' must be a base64 string (dataEncoding is base64)")
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("'data' is not valid base64: %w", err)
		}
		rec.Data = b
	}
	pk, hk := e.PartitionKey, e.ExplicitHashKey
	if pk == "" {
		pk = md[reqPartitionKey]
	}
	if hk == "" {
		hk = md[reqExplicitHashKey]
	}
	if err := setKeys(rec, pk, hk, stream.Auto); err != nil {
		return nil, err
	}
	if err := rec.CheckSize(stream.MaxRecordSize); err != nil {
		return nil, err
	}
	return rec, nil
}

// valid is the records to send, in order: the entries that parsed.
func (br *bulkRequest) valid() []producer.Record {
	out := make([]producer.Record, 0, len(br.records))
	for _, rec := range br.records {
		if rec != nil {
			out = append(out, *rec)
		}
	}
	return out
}

// answer fills the results of the valid entries from their outcomes, given in valid's order. A
// record the producer found too large is an invalid entry, as when parsing found it so.
func (br *bulkRequest) answer(outcomes []producer.Outcome) {
	k := 0
	for i, rec := range br.records {
		if rec == nil {
			continue
		}
		o := outcomes[k]
		k++
		var tooLarge *producer.RecordSizeError
		switch {
		case errors.As(o.Err, &tooLarge):
			br.results[i] = bulkResult{ErrorCode: codeInvalidEntry, ErrorMessage: o.Err.Error()}
		case o.Err != nil:
			br.results[i] = bulkResult{ErrorCode: producer.ErrorCode(o.Err), ErrorMessage: o.Err.Error()}
		default:
			br.results[i] = bulkResult{ShardID: o.ShardID, SequenceNumber: o.SequenceNumber}
			if o.Aggregated {
				br.results[i].SubSequenceNumber = ptr(o.SubSequenceNumber)
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }
