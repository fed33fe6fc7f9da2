package kinesis

import (
	"encoding/json"
	"testing"

	"github.com/dapr-kinesis/kinesis/internal/streaminfo"
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
		br, err := parseBulkRequest(payload, map[string]string{reqDataEncoding: encoding}, streaminfo.Info{MaxRecordSize: defaultMaxRecordSize})
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
			if n := len([]rune(rec.PartitionKey)); n < 1 || n > maxPartitionKeyChars {
				t.Fatalf("entry %d: accepted partition key of %d characters", i, n)
			}
			if rec.ExplicitHashKey != "" && validateHashKey(rec.ExplicitHashKey) != nil {
				t.Fatalf("entry %d: accepted hash key %q", i, rec.ExplicitHashKey)
			}
			if rec.Size() > defaultMaxRecordSize {
				t.Fatalf("entry %d: accepted %d bytes", i, rec.Size())
			}
		}
	})
}
