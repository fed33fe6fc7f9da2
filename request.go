package kinesis

import (
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/dapr-kinesis/kinesis/internal/producer"

	"github.com/dapr/components-contrib/bindings"
)

// Request metadata keys accepted by Invoke, and the response metadata keys it sets.
const (
	reqPartitionKey              = "partitionKey"
	reqExplicitHashKey           = "explicitHashKey"
	reqSequenceNumberForOrdering = "sequenceNumberForOrdering"

	respShardID           = "shardId"
	respSequenceNumber    = "sequenceNumber"
	respSubSequenceNumber = "subSequenceNumber"

	maxPartitionKeyChars = 256
)

// bulkCreateOperation puts many records in one call (see bulk.go for its payload and response).
const bulkCreateOperation bindings.OperationKind = "bulkCreate"

var supportedOperations = []bindings.OperationKind{bindings.CreateOperation, bulkCreateOperation}

var (
	// The patterns AWS documents for these fields: decimal, no sign, no leading zeros.
	hashKeyPattern  = regexp.MustCompile(`^(0|[1-9][0-9]{0,38})$`)
	seqOrderPattern = regexp.MustCompile(`^(0|[1-9][0-9]{0,128})$`)
	maxHashKey      = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 128), big.NewInt(1))
)

// parseCreateRequest validates the request metadata of a create call for a stream that places
// records by their keys or, with auto, itself (RecordDistributionStrategy AUTO).
func parseCreateRequest(data []byte, md map[string]string, auto bool) (producer.Record, error) {
	rec := producer.Record{Data: data}
	if err := setKeys(&rec, md[reqPartitionKey], md[reqExplicitHashKey], auto); err != nil {
		return producer.Record{}, err
	}
	if seq := md[reqSequenceNumberForOrdering]; seq != "" {
		if auto {
			return producer.Record{}, placedByStream(reqSequenceNumberForOrdering, "refuses it")
		}
		if !seqOrderPattern.MatchString(seq) {
			return producer.Record{}, fmt.Errorf("request metadata '%s' must be a decimal sequence number", reqSequenceNumberForOrdering)
		}
		rec.SequenceNumberForOrdering = seq
	}
	return rec, nil
}

// setKeys validates and sets the partition and explicit hash keys. An empty partition key gets a
// random UUID, as upstream, which spreads records over the shards; on a stream that places records
// itself (auto) it stays empty, and the record is sent without one, as AWS allows there.
func setKeys(r *producer.Record, partitionKey, explicitHashKey string, auto bool) error {
	if explicitHashKey != "" && auto {
		return placedByStream(reqExplicitHashKey, "ignores hash keys")
	}
	if partitionKey == "" {
		if auto {
			return nil
		}
		partitionKey = uuid.NewString()
	}
	if n := utf8.RuneCountInString(partitionKey); n > maxPartitionKeyChars {
		return fmt.Errorf("request metadata '%s' must be 1 to %d characters, got %d", reqPartitionKey, maxPartitionKeyChars, n)
	}
	if !utf8.ValidString(partitionKey) {
		return fmt.Errorf("request metadata '%s' must be valid UTF-8", reqPartitionKey)
	}
	r.PartitionKey = partitionKey

	if explicitHashKey != "" {
		if err := validateHashKey(explicitHashKey); err != nil {
			return err
		}
		r.ExplicitHashKey = explicitHashKey
	}
	return nil
}

// placedByStream is the error for a field that a stream placing records itself does not take.
func placedByStream(field, what string) error {
	return fmt.Errorf("request metadata '%s' cannot be used: the stream places records itself (RecordDistributionStrategy AUTO) and %s", field, what)
}

func validateHashKey(s string) error {
	if !hashKeyPattern.MatchString(s) {
		return fmt.Errorf("request metadata '%s' must be a decimal integer from 0 to 2^128-1 without sign or leading zeros", reqExplicitHashKey)
	}
	v, _ := new(big.Int).SetString(s, 10)
	if v.Cmp(maxHashKey) > 0 {
		return fmt.Errorf("request metadata '%s' must be at most 2^128-1 (%s)", reqExplicitHashKey, maxHashKey)
	}
	return nil
}

func unsupportedOperation(op bindings.OperationKind) error {
	names := make([]string, len(supportedOperations))
	for i, o := range supportedOperations {
		names[i] = string(o)
	}
	return fmt.Errorf("kinesis binding error: unsupported operation %q; supported: %s", op, strings.Join(names, ", "))
}

var errNilRequest = errors.New("kinesis binding error: nil invoke request")
