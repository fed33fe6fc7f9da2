// Package kpl builds KPL aggregated records: many user records packed into one Kinesis record in the
// format of the Kinesis Producer Library (awslabs/amazon-kinesis-producer, aggregation-format.md),
// which KCL, this binding's input, Flink's connector and awslabs' kinesis-aggregation libraries
// de-aggregate.
//
// An aggregated record is the 4 magic bytes F3 89 9A C2, a protobuf AggregatedRecord (a table of
// partition keys, a table of explicit hash keys, and the records, each naming its keys by index) and
// the MD5 digest of the protobuf bytes. An Aggregate knows its exact encoded size before it is
// encoded, so that a caller can keep it within the stream's maximum record size.
package kpl

import (
	"crypto/md5" //nolint:gosec // the KPL format ends in an MD5 digest; it is a checksum, not security
	"errors"
	"fmt"
	"math/bits"

	"github.com/awslabs/kinesis-aggregation/go/v2/records"
	"github.com/golang/protobuf/proto" //nolint:staticcheck // records.pb.go is generated for this API
)

// Magic starts every aggregated record.
var Magic = [4]byte{0xF3, 0x89, 0x9A, 0xC2}

const (
	digestSize = md5.Size
	// Overhead is what an aggregate adds around its protobuf body: the magic and the digest.
	Overhead = len(Magic) + digestSize

	// Protobuf tags: field number << 3 | wire type, each one byte for these field numbers.
	tagLen    = 1 // every field here has a one-byte tag
	noEHKSize = 0
)

// Aggregate is an aggregated record being built. The zero value is an empty aggregate. It keeps
// references to the data it is given: the caller must not change that data until Encode returns.
type Aggregate struct {
	pks  keyTable
	ehks keyTable
	recs []userRecord
	body int // exact size of the protobuf body
}

// keyTable is one of an aggregate's key tables: each key once, named by its index.
type keyTable struct {
	index map[string]uint64
	keys  []string
}

// find is key's index, or the index it would get, and whether it is in the table.
func (t *keyTable) find(key string) (uint64, bool) {
	if i, ok := t.index[key]; ok {
		return i, true
	}
	return uint64(len(t.keys)), false
}

// intern is key's index, adding the key if it is new.
func (t *keyTable) intern(key string) uint64 {
	i, ok := t.find(key)
	if !ok {
		if t.index == nil {
			t.index = map[string]uint64{}
		}
		t.index[key] = i
		t.keys = append(t.keys, key)
	}
	return i
}

type userRecord struct {
	pk     uint64
	ehk    uint64
	hasEHK bool
	data   []byte
}

// Len is the number of user records in the aggregate.
func (a *Aggregate) Len() int { return len(a.recs) }

// Size is the exact length of Encode's result: what counts, with the aggregate's own partition key,
// against the stream's maximum record size.
func (a *Aggregate) Size() int { return Overhead + a.body }

// SizeWith is what Size would be after Add(partitionKey, explicitHashKey, data) with data of dataLen
// bytes; the aggregate is not changed. An empty explicitHashKey means the record has none.
func (a *Aggregate) SizeWith(partitionKey, explicitHashKey string, dataLen int) int {
	return Overhead + a.body + a.growth(partitionKey, explicitHashKey, dataLen)
}

// growth is how many bytes the body grows by when the record is added.
func (a *Aggregate) growth(partitionKey, explicitHashKey string, dataLen int) int {
	n := 0
	pk, ok := a.pks.find(partitionKey)
	if !ok {
		n += fieldSize(len(partitionKey))
	}
	ehkSize := noEHKSize
	if explicitHashKey != "" {
		ehk, ok := a.ehks.find(explicitHashKey)
		if !ok {
			n += fieldSize(len(explicitHashKey))
		}
		ehkSize = tagLen + varintSize(ehk)
	}
	rec := tagLen + varintSize(pk) + ehkSize + fieldSize(dataLen)
	return n + fieldSize(rec)
}

// Add appends a user record. An empty explicitHashKey means the record has none.
func (a *Aggregate) Add(partitionKey, explicitHashKey string, data []byte) {
	a.body += a.growth(partitionKey, explicitHashKey, len(data))
	r := userRecord{pk: a.pks.intern(partitionKey), data: data}
	if explicitHashKey != "" {
		r.ehk, r.hasEHK = a.ehks.intern(explicitHashKey), true
	}
	a.recs = append(a.recs, r)
}

// errEmpty is returned by Encode for an aggregate without records, which no consumer expects.
var errEmpty = errors.New("kpl: empty aggregate")

// Encode returns the aggregated record: magic, protobuf body, MD5 of the body.
func (a *Aggregate) Encode() ([]byte, error) {
	if len(a.recs) == 0 {
		return nil, errEmpty
	}
	msg := &records.AggregatedRecord{
		PartitionKeyTable:    a.pks.keys,
		ExplicitHashKeyTable: a.ehks.keys,
		Records:              make([]*records.Record, len(a.recs)),
	}
	for i := range a.recs {
		r := &a.recs[i]
		data := r.data
		if data == nil {
			data = []byte{} // a required field: nil would be "not set"
		}
		pr := &records.Record{PartitionKeyIndex: &r.pk, Data: data}
		if r.hasEHK {
			pr.ExplicitHashKeyIndex = &r.ehk
		}
		msg.Records[i] = pr
	}
	body, err := proto.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("kpl: encoding the aggregate: %w", err)
	}
	if len(body) != a.body {
		// Size promised the caller a length that fits the stream; a different one might not.
		return nil, fmt.Errorf("kpl: encoded body is %d bytes, computed %d", len(body), a.body)
	}
	out := make([]byte, 0, Overhead+len(body))
	out = append(out, Magic[:]...)
	out = append(out, body...)
	sum := md5.Sum(body) //nolint:gosec // the format's checksum
	return append(out, sum[:]...), nil
}

// fieldSize is the encoded size of a length-delimited field with a one-byte tag.
func fieldSize(n int) int { return tagLen + varintSize(uint64(n)) + n } //nolint:gosec // lengths are never negative

// varintSize is the length of v as a protobuf varint.
func varintSize(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }
