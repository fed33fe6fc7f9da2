package kpl

import (
	"bytes"
	"crypto/md5"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/awslabs/kinesis-aggregation/go/v2/deaggregator"
	"github.com/awslabs/kinesis-aggregation/go/v2/records"
	"github.com/golang/protobuf/proto" //nolint:staticcheck // the API records.pb.go is generated for
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type userRec struct {
	pk, ehk string
	data    []byte
}

// roundTrip builds an aggregate of recs, checks every size it promised along the way, encodes it and
// decodes it with awslabs' de-aggregator and, for the hash keys it ignores, with the protobuf type.
func roundTrip(t *testing.T, recs []userRec) {
	t.Helper()
	var a Aggregate
	for _, r := range recs {
		want := a.SizeWith(r.pk, r.ehk, len(r.data))
		a.Add(r.pk, r.ehk, r.data)
		require.Equal(t, want, a.Size(), "SizeWith predicts Size after Add")
	}
	require.Equal(t, len(recs), a.Len())
	enc, err := a.Encode()
	require.NoError(t, err)
	require.Len(t, enc, a.Size(), "Size is the exact encoded length")
	require.True(t, bytes.HasPrefix(enc, Magic[:]))
	body := enc[len(Magic) : len(enc)-md5.Size]
	sum := md5.Sum(body)
	require.Equal(t, sum[:], enc[len(enc)-md5.Size:], "MD5 trailer")

	got, err := deaggregator.DeaggregateRecords([]types.Record{{
		Data: enc, PartitionKey: aws.String("aggregate"), SequenceNumber: aws.String("1"),
	}})
	require.NoError(t, err)
	require.Len(t, got, len(recs))
	for i, r := range recs {
		assert.Equal(t, r.pk, aws.ToString(got[i].PartitionKey), i)
		assert.True(t, bytes.Equal(r.data, got[i].Data), "record %d data", i)
	}

	var msg records.AggregatedRecord
	require.NoError(t, proto.Unmarshal(body, &msg))
	for i, r := range recs {
		pr := msg.GetRecords()[i]
		if r.ehk == "" {
			assert.Nil(t, pr.ExplicitHashKeyIndex, i)
			continue
		}
		require.NotNil(t, pr.ExplicitHashKeyIndex, i)
		assert.Equal(t, r.ehk, msg.GetExplicitHashKeyTable()[pr.GetExplicitHashKeyIndex()], i)
	}
}

func TestAggregateRoundTripsThroughTheAWSLabsDeaggregator(t *testing.T) {
	t.Parallel()
	cases := map[string][]userRec{
		"one record":      {{pk: "a", data: []byte("x")}},
		"shared keys":     {{pk: "a", data: []byte("1")}, {pk: "b", data: []byte("2")}, {pk: "a", data: []byte("3")}},
		"empty data":      {{pk: "a", data: nil}, {pk: "b", data: []byte{}}},
		"explicit hashes": {{pk: "a", ehk: "0", data: []byte("1")}, {pk: "b", data: []byte("2")}, {pk: "c", ehk: "0", data: []byte("3")}},
		"long key and data": {
			{pk: strings.Repeat("k", 256), data: bytes.Repeat([]byte("d"), 70000)},
			{pk: "short", ehk: "340282366920938463463374607431768211455", data: bytes.Repeat([]byte("e"), 200)},
		},
	}
	many := make([]userRec, 300) // indexes past 127 take two varint bytes
	for i := range many {
		many[i] = userRec{pk: fmt.Sprintf("key-%d", i), data: []byte(strconv.Itoa(i))}
	}
	cases["indexes over 127"] = many
	for name, recs := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			roundTrip(t, recs)
		})
	}
}

func TestEncodeRejectsAnEmptyAggregate(t *testing.T) {
	t.Parallel()
	var a Aggregate
	_, err := a.Encode()
	require.ErrorIs(t, err, errEmpty)
}

func TestSizeWithDoesNotChangeTheAggregate(t *testing.T) {
	t.Parallel()
	var a Aggregate
	a.Add("a", "", []byte("x"))
	before := a.Size()
	_ = a.SizeWith("new-key", "12", 1000)
	assert.Equal(t, before, a.Size())
	assert.Equal(t, 1, a.Len())
}

func TestVarintSize(t *testing.T) {
	t.Parallel()
	for v, want := range map[uint64]int{0: 1, 1: 1, 127: 1, 128: 2, 16383: 2, 16384: 3, 1 << 63: 10} {
		assert.Equal(t, want, varintSize(v), v)
		assert.Len(t, proto.EncodeVarint(v), want, v)
	}
}

// FuzzAggregateRoundTrip: whatever user records go in, the awslabs de-aggregator gives them back,
// and Size is the exact encoded length.
func FuzzAggregateRoundTrip(f *testing.F) {
	f.Add([]byte("a\x00hello\x00b\x00world\x00a\x00again"), uint8(3))
	f.Add([]byte{}, uint8(0))
	f.Add(bytes.Repeat([]byte("xy\x00"), 200), uint8(7))
	f.Fuzz(func(t *testing.T, raw []byte, ehkEvery uint8) {
		parts := bytes.Split(raw, []byte{0})
		recs := make([]userRec, 0, len(parts)/2+1)
		for i := 0; i+1 < len(parts); i += 2 {
			r := userRec{pk: string(parts[i]), data: parts[i+1]}
			if r.pk == "" {
				r.pk = "empty"
			}
			if ehkEvery > 0 && len(recs)%int(ehkEvery) == 0 {
				r.ehk = strconv.Itoa(len(parts[i+1]))
			}
			recs = append(recs, r)
		}
		if len(recs) == 0 {
			return
		}
		roundTrip(t, recs)
	})
}
