package kinesis

import (
	"encoding/json"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	deagg "github.com/awslabs/kinesis-aggregation/go/v2/deaggregator"

	"github.com/dapr/kit/logger"
)

// FuzzParseBulkRequest: any payload either fails as a whole or yields one result slot per array
// element, and whatever it accepts is a record AWS would take.
func FuzzParseBulkRequest(f *testing.F) {
	f.Add([]byte(`[{"data":{"order":1},"partitionKey":"k"},{"data":"x","explicitHashKey":"0"}]`), "")
	f.Add([]byte(`[{"data":"aGVsbG8=","partitionKey":"k"}]`), "base64")
	f.Add([]byte(`[{"data":"not base64!"},{"partitionKey":"no data"},{"data":1,"extra":true}]`), "base64")
	f.Add([]byte(`{"data":1}`), "")
	f.Add([]byte(`[null, 1, "x", [], {}]`), "json")
	f.Add([]byte(`[{"data":1,"explicitHashKey":"340282366920938463463374607431768211456"}]`), "")
	f.Fuzz(func(t *testing.T, payload []byte, encoding string) {
		br, err := parseBulkRequest(payload, map[string]string{reqDataEncoding: encoding}, defaultMaxRecordSize)
		if err != nil {
			return
		}
		var elems []json.RawMessage
		if json.Unmarshal(payload, &elems) != nil {
			t.Fatalf("accepted a payload that is not a JSON array: %q", payload)
		}
		if len(br.records) != len(elems) || len(br.results) != len(elems) {
			t.Fatalf("%d elements gave %d records and %d results", len(elems), len(br.records), len(br.results))
		}
		for i, rec := range br.records {
			if rec == nil {
				if br.results[i].ErrorCode == "" {
					t.Fatalf("entry %d rejected without an error code", i)
				}
				continue
			}
			if n := len([]rune(rec.partitionKey)); n < 1 || n > maxPartitionKeyChars {
				t.Fatalf("entry %d: accepted partition key of %d characters", i, n)
			}
			if rec.explicitHashKey != "" && validateHashKey(rec.explicitHashKey) != nil {
				t.Fatalf("entry %d: accepted hash key %q", i, rec.explicitHashKey)
			}
			if rec.size() > defaultMaxRecordSize {
				t.Fatalf("entry %d: accepted %d bytes", i, rec.size())
			}
		}
	})
}

// FuzzDeaggregation: records that look like KPL aggregates never make de-aggregation fail for the
// whole batch once undecodable ones are dropped, and the plain records around them are kept.
func FuzzDeaggregation(f *testing.F) {
	f.Add([]byte("plain"), []byte{0xf3, 0x89, 0x9a, 0xc2, 0x0a, 0x01, 0x6b})
	f.Add([]byte{0xf3, 0x89, 0x9a, 0xc2}, []byte("x"))
	f.Add([]byte{}, append([]byte{0xf3, 0x89, 0x9a, 0xc2}, make([]byte, 16)...))
	log := logger.NewLogger("fuzz")
	log.SetOutputLevel(logger.FatalLevel)
	f.Fuzz(func(t *testing.T, a, b []byte) {
		recs := []types.Record{
			{Data: []byte("before"), PartitionKey: aws.String("k"), SequenceNumber: aws.String("1")},
			{Data: a, PartitionKey: aws.String("k"), SequenceNumber: aws.String("2")},
			{Data: b, PartitionKey: aws.String("k"), SequenceNumber: aws.String("3")},
			{Data: []byte("after"), PartitionKey: aws.String("k"), SequenceNumber: aws.String("4")},
		}
		kept := dropUndecodableAggregates(recs, "shardId-000000000000", log)
		if string(kept[0].Data) != "before" || string(kept[len(kept)-1].Data) != "after" {
			t.Fatalf("plain records around the aggregates were dropped")
		}
		if _, err := deagg.DeaggregateRecords(kept); err != nil {
			t.Fatalf("de-aggregation still fails after dropping undecodable aggregates: %v", err)
		}
	})
}

// FuzzParseCheckpoint: a checkpoint position survives its round trip, and sentinels or plain
// sequence numbers are never read as a position inside an aggregate.
func FuzzParseCheckpoint(f *testing.F) {
	f.Add("49590338271490256608559692538361571095921575989136588898:3")
	f.Add("SHARD_END")
	f.Add("123")
	f.Add(":1")
	f.Add("1:-1")
	f.Fuzz(func(t *testing.T, cp string) {
		p, ok := parseCheckpoint(cp)
		if !ok {
			return
		}
		if p.seq == "" || p.sub < 0 {
			t.Fatalf("%q parsed as %+v", cp, p)
		}
		again, ok := parseCheckpoint(p.checkpoint(p.sub + 2))
		if !ok || again != p {
			t.Fatalf("%q: round trip gave %+v, %v", cp, again, ok)
		}
	})
}
