package kinesis

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"
)

// Hostile metadata through Init, the way daprd hands it over. metadata_test.go covers each
// validation rule through parseMetadata; here the inputs are the ones an operator or a templating
// mistake produces, and the contract is: an error that starts with the binding's prefix and names
// the field, or a binding that works; never a panic.

// hostileBase is valid on its own, so any error comes from the field under test; Init makes no
// network call, so the endpoint need not answer.
var hostileBase = map[string]string{
	"streamName": "orders",
	"region":     "us-east-1",
	"accessKey":  "AKID",
	"secretKey":  "SECRET",
	"endpoint":   "http://127.0.0.1:1",
}

// initHostile runs Init with props and turns a panic into a test failure naming the input.
func initHostile(t *testing.T, props map[string]string) (err error) {
	t.Helper()
	b := NewAWSKinesis(logger.NewLogger(t.Name()))
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Init panicked on %s: %v", describeProps(props), r)
		}
	}()
	err = b.Init(t.Context(), bindings.Metadata{Base: metadata.Base{Properties: props}})
	if err != nil {
		// A failed Init leaves a binding that refuses work instead of crashing.
		_, ierr := b.Invoke(t.Context(), &bindings.InvokeRequest{Operation: bindings.CreateOperation, Data: []byte("x")})
		require.Error(t, ierr, "Invoke after a failed Init")
		require.Error(t, b.Read(t.Context(), func(context.Context, *bindings.ReadResponse) ([]byte, error) { return nil, nil }),
			"Read after a failed Init")
	}
	require.NoError(t, b.Close())
	return err
}

func TestInitRejectsHostileMetadata(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("x", 1<<20)
	tests := []struct {
		name  string
		props map[string]string
		field string // the field the error must name
	}{
		// Wrong types.
		{"duration as a word", map[string]string{"leaseDuration": "ten seconds"}, "leaseDuration"},
		{"duration as a float without unit", map[string]string{"pollInterval": "1.5"}, "pollInterval"},
		{"duration in scientific notation", map[string]string{"retryMaxInterval": "1e3"}, "retryMaxInterval"},
		{"duration as JSON", map[string]string{"shardSyncInterval": `{"seconds":1}`}, "shardSyncInterval"},
		{"integer as a float", map[string]string{"maxRecords": "1.5"}, "maxRecords"},
		{"integer as a bool", map[string]string{"maxInFlightBatches": "true"}, "maxInFlightBatches"},
		{"integer as a list", map[string]string{"maxDeliveryAttempts": "[1,2]"}, "maxDeliveryAttempts"},
		{"integer with spaces", map[string]string{"maxRecords": " 5 "}, "maxRecords"},
		// Huge values.
		{"integer beyond int64", map[string]string{"maxRecords": "99999999999999999999"}, "maxRecords"},
		{"duration beyond int64", map[string]string{"leaseDuration": "9999999999h"}, "leaseDuration"},
		{"most negative integer", map[string]string{"maxDeliveryAttempts": "-9223372036854775808"}, "maxDeliveryAttempts"},
		{"stream name of 1 MiB", map[string]string{"streamName": huge}, "streamName"},
		{"maxRecords past the AWS limit", map[string]string{"maxRecords": "2147483647"}, "maxRecords"},
		// Unknown modes and positions.
		{"mode with a NUL", map[string]string{"mode": "shared\x00"}, "mode"},
		{"mode list", map[string]string{"mode": "shared,extended"}, "mode"},
		{"mode of another binding", map[string]string{"mode": "fan-out"}, "mode"},
		{"mode of 1 MiB", map[string]string{"mode": huge}, "mode"},
		{"position in lower case with junk", map[string]string{"initialPosition": "trim-horizon"}, "initialPosition"},
		{"position invalid UTF-8", map[string]string{"initialPosition": "\xff\xfe"}, "initialPosition"},
		// Negative and zero durations.
		{"negative poll", map[string]string{"pollInterval": "-250ms"}, "pollInterval"},
		{"negative lease", map[string]string{"leaseDuration": "-1h"}, "leaseDuration"},
		{"negative sync", map[string]string{"shardSyncInterval": "-1s"}, "shardSyncInterval"},
		{"negative retry", map[string]string{"retryInitialInterval": "-1ns"}, "retryInitialInterval"},
		{"negative retry max", map[string]string{"retryMaxInterval": "-10s"}, "retryMaxInterval"},
		{"negative linger", map[string]string{"batchLinger": "-2ms"}, "batchLinger"},
		{"zero lease", map[string]string{"leaseDuration": "0"}, "leaseDuration"},
		// Invalid timestamps.
		{"month 13", map[string]string{"initialTimestamp": "2026-13-01T00:00:00Z"}, "initialTimestamp"},
		{"date only", map[string]string{"initialTimestamp": "2026-01-01"}, "initialTimestamp"},
		{"seconds beyond int64", map[string]string{"initialTimestamp": "99999999999999999999"}, "initialTimestamp"},
		{"scientific seconds", map[string]string{"initialTimestamp": "1.7e9"}, "initialTimestamp"},
		{"NaN", map[string]string{"initialTimestamp": "NaN"}, "initialTimestamp"},
		{"blank with AT_TIMESTAMP", map[string]string{"initialPosition": "AT_TIMESTAMP", "initialTimestamp": "   "}, "initialTimestamp"},
		{"AT_TIMESTAMP without one", map[string]string{"initialPosition": "AT_TIMESTAMP"}, "initialTimestamp"},
		// Required values blanked by a template.
		{"stream blank", map[string]string{"streamName": " \t\n"}, "streamName"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			props := maps.Clone(hostileBase)
			maps.Copy(props, tc.props)
			err := initHostile(t, props)
			require.Error(t, err, describeProps(tc.props))
			assertNamesField(t, err, tc.field)
		})
	}
}

// TestInitNeverPanicsOnAnyField puts each hostile value into every field the metadata has, one at
// a time: Init may accept it (many fields are free text) but must not panic, and an error must
// name the field.
func TestInitNeverPanicsOnAnyField(t *testing.T) {
	t.Parallel()
	values := []string{
		"", " ", "\x00", "\xff\xfe\xfd", "-1", "0", "-9223372036854775808", "18446744073709551616",
		"1e400", "NaN", "-Inf", "9999999999h", "-1ns", "true", "[]", "{}", `{"a":[1,{"b":null}]}`,
		"${SECRET}", "{{ .Values.x }}", "\u202e\u0000evil", "%s%n%x", strings.Repeat("9", 4096),
		strings.Repeat("é", 70_000),
	}
	fields := metadataKeys()
	require.Contains(t, fields, "streamName")
	for _, field := range fields {
		t.Run(field, func(t *testing.T) {
			t.Parallel()
			for _, v := range values {
				props := maps.Clone(hostileBase)
				props[field] = v
				if err := initHostile(t, props); err != nil {
					assertNamesField(t, err, field)
				}
			}
		})
	}
}

// metadataKeys lists every key the component reads, aliases included, from the struct itself so
// that a field added later is covered too.
func metadataKeys() []string {
	var keys []string
	typ := reflect.TypeOf(kinesisMetadata{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ","); name != "" && name != "-" {
			keys = append(keys, name)
		}
		for _, alias := range strings.Split(f.Tag.Get("mapstructurealiases"), ",") {
			if alias != "" {
				keys = append(keys, alias)
			}
		}
	}
	return keys
}

// fieldAliases maps an alias to the field an error names.
var fieldAliases = map[string][]string{"awsRegion": {"region"}, "sessionName": {"assumeRoleSessionName"}}

func assertNamesField(t *testing.T, err error, field string) {
	t.Helper()
	msg := err.Error()
	assert.True(t, strings.HasPrefix(msg, "kinesis binding error:"), "error without the binding's prefix: %.300s", msg)
	names := append([]string{field}, fieldAliases[field]...)
	for _, n := range names {
		if strings.Contains(msg, "'"+n+"'") || strings.Contains(msg, n) {
			return
		}
	}
	t.Errorf("error does not name %q: %.300s", field, msg)
}

func describeProps(props map[string]string) string {
	var b strings.Builder
	for k, v := range props {
		if len(v) > 40 {
			v = fmt.Sprintf("%.40s... (%d bytes)", v, len(v))
		}
		fmt.Fprintf(&b, "%s=%q ", k, v)
	}
	return b.String()
}
