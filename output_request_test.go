package kinesis

import (
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseCreateRequest(t *testing.T) {
	rec, err := parseCreateRequest([]byte("x"), map[string]string{
		reqPartitionKey:              "key-1",
		reqExplicitHashKey:           "340282366920938463463374607431768211455",
		reqSequenceNumberForOrdering: "49590338271490256608559692538361571095921575989136588898",
	}, false)
	require.NoError(t, err)
	assert.Equal(t, "key-1", rec.PartitionKey)
	assert.Equal(t, "340282366920938463463374607431768211455", rec.ExplicitHashKey)
	assert.Equal(t, "49590338271490256608559692538361571095921575989136588898", rec.SequenceNumberForOrdering)
	assert.Equal(t, 6, rec.Size())

	rec, err = parseCreateRequest(nil, nil, false)
	require.NoError(t, err)
	_, err = uuid.Parse(rec.PartitionKey)
	require.NoError(t, err, "a missing partition key becomes a random UUID")
	assert.Empty(t, rec.ExplicitHashKey)

	rec, err = parseCreateRequest(nil, map[string]string{reqPartitionKey: strings.Repeat("é", 256), reqExplicitHashKey: "0"}, false)
	require.NoError(t, err, "256 characters is the limit, not 256 bytes")
	assert.Equal(t, "0", rec.ExplicitHashKey)
}

func TestParseCreateRequestErrors(t *testing.T) {
	tests := []struct {
		name string
		md   map[string]string
		want string
	}{
		{"key too long", map[string]string{reqPartitionKey: strings.Repeat("k", 257)}, "'partitionKey' must be 1 to 256 characters, got 257"},
		{"key not utf8", map[string]string{reqPartitionKey: "\xff\xfe"}, "'partitionKey' must be valid UTF-8"},
		{"hash key negative", map[string]string{reqExplicitHashKey: "-1"}, "'explicitHashKey' must be a decimal integer"},
		{"hash key hex", map[string]string{reqExplicitHashKey: "0x10"}, "'explicitHashKey' must be a decimal integer"},
		{"hash key leading zero", map[string]string{reqExplicitHashKey: "007"}, "'explicitHashKey' must be a decimal integer"},
		{"hash key space", map[string]string{reqExplicitHashKey: " 7"}, "'explicitHashKey' must be a decimal integer"},
		{"hash key 2^128", map[string]string{reqExplicitHashKey: "340282366920938463463374607431768211456"}, "'explicitHashKey' must be at most 2^128-1"},
		{"hash key 40 digits", map[string]string{reqExplicitHashKey: "1000000000000000000000000000000000000000"}, "'explicitHashKey' must be a decimal integer"},
		{"ordering not decimal", map[string]string{reqSequenceNumberForOrdering: "abc"}, "'sequenceNumberForOrdering' must be a decimal sequence number"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseCreateRequest([]byte("x"), tc.md, false)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func FuzzParseCreateRequest(f *testing.F) {
	f.Add("key", "0", "1")
	f.Add("", "340282366920938463463374607431768211455", "")
	f.Add(strings.Repeat("k", 257), "340282366920938463463374607431768211456", "00")
	f.Add("\xff", "-1", "x")
	f.Fuzz(func(t *testing.T, key, hash, seq string) {
		rec, err := parseCreateRequest([]byte("d"), map[string]string{
			reqPartitionKey: key, reqExplicitHashKey: hash, reqSequenceNumberForOrdering: seq,
		}, false)
		if err != nil {
			return
		}
		// Whatever is accepted must be acceptable to AWS.
		if n := len([]rune(rec.PartitionKey)); n < 1 || n > maxPartitionKeyChars {
			t.Fatalf("accepted partition key of %d characters", n)
		}
		if rec.ExplicitHashKey != "" && validateHashKey(rec.ExplicitHashKey) != nil {
			t.Fatalf("accepted hash key %q", rec.ExplicitHashKey)
		}
	})
}

func FuzzParseMetadata(f *testing.F) {
	f.Add("orders", "shared", "LATEST", "", "10s", "250ms", "1000", "2ms")
	f.Add("s", "extended", "AT_TIMESTAMP", "2026-01-01T00:00:00Z", "1s", "200ms", "1", "0")
	f.Add("", "x", "AT_TIMESTAMP", "-1", "-1s", "1ns", "-5", "-1ms")
	f.Add("s", "", "", "99999999999999999999", "9999999999h", "abc", "1e9", "1")
	f.Fuzz(func(t *testing.T, stream, mode, pos, ts, lease, poll, maxRecords, linger string) {
		m, err := parseMetadata(map[string]string{
			"streamName": stream, "mode": mode, "initialPosition": pos, "initialTimestamp": ts,
			"leaseDuration": lease, "pollInterval": poll, "maxRecords": maxRecords, "batchLinger": linger,
		})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "kinesis binding error:") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		// Whatever is accepted must be usable.
		if m.StreamName == "" || (m.Mode != modeShared && m.Mode != modeExtended) ||
			m.LeaseDuration < 1e9 || m.PollInterval < minPollInterval || m.MaxRecords < 1 || m.BatchLinger < 0 {
			t.Fatalf("accepted unusable metadata: %+v", m)
		}
	})
}
