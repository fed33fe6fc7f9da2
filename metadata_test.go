package kinesis

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/dapr-kinesis/kinesis/internal/leases"
)

func TestParseMetadataDefaults(t *testing.T) {
	m, err := parseMetadata(map[string]string{"streamName": "orders"})
	require.NoError(t, err)

	assert.Equal(t, "orders", m.StreamName)
	assert.Equal(t, modeShared, m.Mode)
	assert.Equal(t, positionLatest, m.InitialPosition)
	assert.Equal(t, 10*time.Second, m.LeaseDuration)
	assert.Equal(t, 500*time.Millisecond, m.ShardSyncInterval)
	assert.True(t, m.LeaseStealing)
	assert.Equal(t, 100*time.Millisecond, m.RetryInitialInterval)
	assert.Equal(t, 10*time.Second, m.RetryMaxInterval)
	assert.Zero(t, m.MaxDeliveryAttempts)
	assert.Equal(t, 1, m.ConcurrencyPerShard, "one record of a shard at a time, as upstream")
	assert.Equal(t, time.Minute, m.LagWarningThreshold)
	assert.Equal(t, 250*time.Millisecond, m.PollInterval)
	assert.Equal(t, 10000, m.MaxRecords)
	assert.False(t, m.DeregisterConsumerOnClose)
	assert.Equal(t, 2*time.Millisecond, m.BatchLinger)
	assert.Equal(t, 16, m.MaxInFlightBatches)
	assert.Empty(t, m.ConsumerName, "output-only components need no consumerName")
}

func TestParseMetadataValues(t *testing.T) {
	props := map[string]string{
		"streamName":                "orders",
		"consumerName":              "app",
		"mode":                      "Extended",
		"region":                    "eu-west-1",
		"endpoint":                  "http://127.0.0.1:1",
		"accessKey":                 "AKID",
		"secretKey":                 "SECRET",
		"sessionToken":              "TOKEN",
		"initialPosition":           "at_timestamp",
		"initialTimestamp":          "2026-11-26T08:00:00Z",
		"leaseTableName":            "leases",
		"dynamoDBEndpoint":          "http://127.0.0.1:2",
		"workerID":                  "w1",
		"leaseDuration":             "20s",
		"shardSyncInterval":         "750ms",
		"leaseStealing":             "false",
		"leaseProtocol":             " Renewal ",
		"retryInitialInterval":      "1s",
		"retryMaxInterval":          "1m",
		"maxDeliveryAttempts":       "5",
		"concurrencyPerShard":       "32",
		"lagWarningThreshold":       "30s",
		"deadLetterStream":          "orders-dead",
		"maxRecordAge":              "6h",
		"pollInterval":              "1s",
		"maxRecords":                "10000",
		"consumerARN":               "arn:aws:kinesis:eu-west-1:1:stream/orders/consumer/app:1",
		"deregisterConsumerOnClose": "true",
		"batchLinger":               "0",
		"maxInFlightBatches":        "4",
	}
	before := maps2slice(props)
	m, err := parseMetadata(props)
	require.NoError(t, err)
	assert.Equal(t, before, maps2slice(props), "the caller's map must not change")

	assert.Equal(t, modeExtended, m.Mode)
	assert.Equal(t, "eu-west-1", m.Region)
	assert.Equal(t, positionAtTimestamp, m.InitialPosition)
	assert.Equal(t, time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC), m.initialTimestamp.UTC())
	assert.Equal(t, "leases", m.leaseTable())
	assert.Equal(t, "http://127.0.0.1:2", m.dynamoDBEndpoint())
	assert.Equal(t, 20*time.Second, m.LeaseDuration)
	assert.Equal(t, 750*time.Millisecond, m.ShardSyncInterval)
	assert.False(t, m.LeaseStealing)
	assert.Equal(t, leases.ProtocolRenewal, m.LeaseProtocol)
	assert.Equal(t, time.Second, m.RetryInitialInterval)
	assert.Equal(t, time.Minute, m.RetryMaxInterval)
	assert.Equal(t, 5, m.MaxDeliveryAttempts)
	assert.Equal(t, 32, m.ConcurrencyPerShard)
	assert.Equal(t, 30*time.Second, m.LagWarningThreshold)
	assert.Equal(t, "orders-dead", m.DeadLetterStream)
	assert.Equal(t, 6*time.Hour, m.MaxRecordAge)
	assert.Equal(t, time.Second, m.PollInterval)
	assert.Equal(t, 10000, m.MaxRecords)
	assert.True(t, m.DeregisterConsumerOnClose)
	assert.Zero(t, m.BatchLinger)
	assert.Equal(t, 4, m.MaxInFlightBatches)
	assert.Equal(t, aggregationNone, m.Aggregation, "the default")

	kpl, err := parseMetadata(map[string]string{"streamName": "s", "aggregation": " KPL "})
	require.NoError(t, err)
	assert.Equal(t, aggregationKPL, kpl.Aggregation)

	auth := m.authOptions(nil, props)
	assert.Equal(t, "AKID", auth.AccessKey)
	assert.Equal(t, "SECRET", auth.SecretKey)
	assert.Equal(t, "TOKEN", auth.SessionToken)
	assert.Equal(t, "http://127.0.0.1:1", auth.Endpoint)
}

func maps2slice(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

func TestParseMetadataDerivedDefaults(t *testing.T) {
	m, err := parseMetadata(map[string]string{"streamName": "s", "consumerName": "app", "endpoint": "http://k"})
	require.NoError(t, err)
	assert.Equal(t, "app", m.leaseTable(), "lease table defaults to consumerName, as upstream")
	assert.Equal(t, "http://k", m.dynamoDBEndpoint(), "DynamoDB endpoint defaults to endpoint")

	m, err = parseMetadata(map[string]string{"streamName": "s", "awsRegion": "ap-south-1", "initialTimestamp": "1700000000"})
	require.NoError(t, err)
	assert.Equal(t, "ap-south-1", m.Region, "awsRegion is an alias of region")
	assert.Equal(t, time.Unix(1700000000, 0).UTC(), m.initialTimestamp)
}

func TestParseMetadataStreamARN(t *testing.T) {
	const arn = "arn:aws-cn:kinesis:cn-north-1:123456789012:stream/orders.v2"
	for name, props := range map[string]map[string]string{
		"ARN only":              {"streamARN": " " + arn + " "},
		"ARN and the same name": {"streamARN": arn, "streamName": "orders.v2"},
	} {
		t.Run(name, func(t *testing.T) {
			m, err := parseMetadata(props)
			require.NoError(t, err)
			assert.Equal(t, arn, m.StreamARN)
			assert.Equal(t, "orders.v2", m.StreamName, "the name, for logs, read metadata and the envelope")
			assert.Equal(t, "cn-north-1", m.authOptions(nil, props).Region, "the stream's region")
		})
	}
	m, err := parseMetadata(map[string]string{"streamARN": arn, "region": "eu-west-1"})
	require.NoError(t, err)
	assert.Equal(t, "eu-west-1", m.authOptions(nil, nil).Region, "a region that is set wins")
}

func TestQueueModeNeedsAQueueName(t *testing.T) {
	m, err := parseMetadata(map[string]string{"streamName": "s", "mode": "queue"})
	require.NoError(t, err, "Init: output-only components need no queue")
	require.ErrorContains(t, m.inputReady(), "mode queue needs 'queueARN', 'queueName' or 'consumerName'")
	for _, props := range []map[string]string{
		{"streamName": "s", "mode": "queue", "consumerName": "app"},
		{"streamName": "s", "mode": "queue", "queueName": "jobs"},
		{"streamName": "s", "mode": "queue", "queueARN": "arn:aws:kinesis:eu-west-1:123456789012:queue/abc123"},
	} {
		ready, parseErr := parseMetadata(props)
		require.NoError(t, parseErr)
		require.NoError(t, ready.inputReady(), "%v", props)
	}
	m, err = parseMetadata(map[string]string{"streamName": "s", "mode": "queue", "consumerName": "app", "queueName": "jobs"})
	require.NoError(t, err)
	assert.Equal(t, "jobs", m.queueName(), "queueName wins over consumerName")
}

func TestParseMetadataErrors(t *testing.T) {
	tests := []struct {
		name  string
		props map[string]string
		want  string
	}{
		{"missing stream", map[string]string{}, "'streamName' is required (or 'streamARN')"},
		{"blank stream", map[string]string{"streamName": "  "}, "'streamName' is required (or 'streamARN')"},
		{"long stream", map[string]string{"streamName": strings.Repeat("s", 129)}, "'streamName' must be 1 to 128 characters, got 129"},
		{"unknown mode", map[string]string{"streamName": "s", "mode": "turbo"}, `'mode' must be one of shared, extended, queue; got "turbo"`},
		{"unknown position", map[string]string{"streamName": "s", "initialPosition": "EARLIEST"}, "'initialPosition' must be one of"},
		{"timestamp missing", map[string]string{"streamName": "s", "initialPosition": "AT_TIMESTAMP"}, "'initialTimestamp' is required"},
		{"timestamp bad", map[string]string{"streamName": "s", "initialPosition": "AT_TIMESTAMP", "initialTimestamp": "yesterday"}, "'initialTimestamp' must be RFC 3339"},
		{"timestamp negative", map[string]string{"streamName": "s", "initialTimestamp": "-5"}, "'initialTimestamp' must be RFC 3339"},
		{"lease too short", map[string]string{"streamName": "s", "leaseDuration": "500ms"}, "'leaseDuration' must be between 1s and 1h0m0s"},
		{"lease negative", map[string]string{"streamName": "s", "leaseDuration": "-10s"}, "'leaseDuration' must be between 1s"},
		{"lease not a duration", map[string]string{"streamName": "s", "leaseDuration": "soon"}, "leaseDuration"},
		{"sync too short", map[string]string{"streamName": "s", "shardSyncInterval": "1ms"}, "'shardSyncInterval' must be between 100ms and 10m0s"},
		{"sync not within the lease", map[string]string{"streamName": "s", "shardSyncInterval": "6s", "leaseDuration": "10s"}, "'shardSyncInterval' (6s) must be at most half of 'leaseDuration' (10s)"},
		{"retry zero", map[string]string{"streamName": "s", "retryInitialInterval": "0s"}, "'retryInitialInterval' must be greater than 0"},
		{"retry max below initial", map[string]string{"streamName": "s", "retryInitialInterval": "2s", "retryMaxInterval": "1s"}, "'retryMaxInterval' must be at least 'retryInitialInterval'"},
		{"attempts negative", map[string]string{"streamName": "s", "maxDeliveryAttempts": "-1"}, "'maxDeliveryAttempts' must not be negative"},
		{"attempts not a number", map[string]string{"streamName": "s", "maxDeliveryAttempts": "many"}, "maxDeliveryAttempts"},
		{"poll too fast", map[string]string{"streamName": "s", "pollInterval": "100ms"}, "'pollInterval' must be between 200ms"},
		{"concurrency zero", map[string]string{"streamName": "s", "concurrencyPerShard": "0"}, "'concurrencyPerShard' must be between 1"},
		{"concurrency huge", map[string]string{"streamName": "s", "concurrencyPerShard": "1001"}, "'concurrencyPerShard' must be between 1 (one record of a shard at a time) and 1000"},
		{"concurrency not a number", map[string]string{"streamName": "s", "concurrencyPerShard": "lots"}, "concurrencyPerShard"},
		{"lag warning negative", map[string]string{"streamName": "s", "lagWarningThreshold": "-1s"}, "'lagWarningThreshold' must be between 0"},
		{"dead letters without attempts", map[string]string{"streamName": "s", "deadLetterStream": "d"}, "'deadLetterStream' requires 'maxDeliveryAttempts' > 0"},
		{"dead letters to the stream read", map[string]string{"streamName": "s", "deadLetterStream": "s", "maxDeliveryAttempts": "3"}, "'deadLetterStream' must not be 'streamName'"},
		{"dead-letter stream bad name", map[string]string{"streamName": "s", "deadLetterStream": "a/b", "maxDeliveryAttempts": "3"}, "'deadLetterStream' may contain only"},
		{"record age negative", map[string]string{"streamName": "s", "maxRecordAge": "-1m"}, "'maxRecordAge' must be 0 (no age limit) or between 1s and"},
		{"record age too short", map[string]string{"streamName": "s", "maxRecordAge": "10ms"}, "'maxRecordAge' must be 0"},
		{"record age not a duration", map[string]string{"streamName": "s", "maxRecordAge": "old"}, "maxRecordAge"},
		{"lag warning not a duration", map[string]string{"streamName": "s", "lagWarningThreshold": "soon"}, "lagWarningThreshold"},
		{"max records zero", map[string]string{"streamName": "s", "maxRecords": "0"}, "'maxRecords' must be between 1 and 10000"},
		{"max records huge", map[string]string{"streamName": "s", "maxRecords": "10001"}, "'maxRecords' must be between 1 and 10000"},
		{"max records overflow", map[string]string{"streamName": "s", "maxRecords": "99999999999999999999999"}, "maxRecords"},
		{"linger negative", map[string]string{"streamName": "s", "batchLinger": "-1ms"}, "'batchLinger' must be between 0 (coalescing off) and 1m0s"},
		{"stream with bad characters", map[string]string{"streamName": "bad name!"}, "'streamName' may contain only letters, digits"},
		{"lease too long", map[string]string{"streamName": "s", "leaseDuration": "2h"}, "'leaseDuration' must be between 1s and 1h0m0s"},
		{"poll too slow", map[string]string{"streamName": "s", "pollInterval": "1h"}, "'pollInterval' must be between 200ms"},
		{"retry max too long", map[string]string{"streamName": "s", "retryMaxInterval": "24h"}, "'retryMaxInterval' must be at most 10m0s"},
		{"linger too long", map[string]string{"streamName": "s", "batchLinger": "1h"}, "'batchLinger' must be between 0 (coalescing off) and 1m0s"},
		{"endpoint not a URL", map[string]string{"streamName": "s", "endpoint": "localhost:4567"}, "'endpoint' must be an http or https URL"},
		{"dynamo endpoint bad scheme", map[string]string{"streamName": "s", "dynamoDBEndpoint": "ftp://x"}, "'dynamoDBEndpoint' must be an http or https URL"},
		{"consumer ARN not an ARN", map[string]string{"streamName": "s", "consumerARN": "not-an-arn"}, "'consumerARN' must be a stream consumer ARN"},
		{"worker ID too long", map[string]string{"streamName": "s", "workerID": strings.Repeat("w", 257)}, "'workerID' must be at most 256 characters"},
		{"in flight zero", map[string]string{"streamName": "s", "maxInFlightBatches": "0"}, "'maxInFlightBatches' must be at least 1"},
		{"lease protocol unknown", map[string]string{"streamName": "s", "leaseProtocol": "gossip"}, `'leaseProtocol' must be one of heartbeat, renewal; got "gossip"`},
		{"aggregation unknown", map[string]string{"streamName": "s", "aggregation": "zip"}, `'aggregation' must be one of none, kpl; got "zip"`},
		{"aggregation without linger", map[string]string{"streamName": "s", "aggregation": "kpl", "batchLinger": "0"}, "'aggregation' kpl packs concurrent creates through the coalescer: it needs 'batchLinger' greater than 0"},
		{"stealing not a bool", map[string]string{"streamName": "s", "deregisterConsumerOnClose": "maybe"}, ""},
		{"stream ARN not an ARN", map[string]string{"streamARN": "orders"}, `'streamARN' must be a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME), got "orders"`},
		{"stream ARN of a consumer", map[string]string{"streamARN": "arn:aws:kinesis:eu-west-1:123456789012:stream/orders/consumer/app:1"}, "'streamARN' must be a Kinesis stream ARN"},
		{"stream ARN of another service", map[string]string{"streamARN": "arn:aws:sqs:eu-west-1:123456789012:stream/orders"}, "'streamARN' must be a Kinesis stream ARN"},
		{"stream ARN with a short account", map[string]string{"streamARN": "arn:aws:kinesis:eu-west-1:1234:stream/orders"}, "'streamARN' must be a Kinesis stream ARN"},
		{"queue ARN not a queue's", map[string]string{"streamName": "s", "mode": "queue", "queueARN": "arn:aws:kinesis:eu-west-1:123456789012:stream/s"}, "'queueARN' must be a Kinesis queue ARN"},
		{"queue name with bad characters", map[string]string{"streamName": "s", "mode": "queue", "queueName": "jobs queue"}, "'queueName' may contain only letters, digits"},
		{"queue concurrency zero", map[string]string{"streamName": "s", "queueConcurrency": "0"}, "'queueConcurrency' must be between 1 and 1000"},
		{"queue concurrency too high", map[string]string{"streamName": "s", "queueConcurrency": "1001"}, "'queueConcurrency' must be between 1 and 1000"},
		{"queue visibility too long", map[string]string{"streamName": "s", "queueVisibilityTimeout": "13h"}, "'queueVisibilityTimeout' must be between 1s and 12h0m0s"},
		{"queue visibility zero", map[string]string{"streamName": "s", "queueVisibilityTimeout": "0"}, "'queueVisibilityTimeout' must be between 1s and 12h0m0s"},
		{"dead-letter stream in queue mode", map[string]string{"streamName": "s", "mode": "queue", "deadLetterStream": "d", "maxDeliveryAttempts": "3"}, "'deadLetterStream' is not used in mode queue"},
		{"record age in queue mode", map[string]string{"streamName": "s", "mode": "queue", "maxRecordAge": "1h"}, "'maxRecordAge' is not used in mode queue"},
		{"stream name and ARN disagree", map[string]string{"streamName": "payments", "streamARN": "arn:aws:kinesis:eu-west-1:123456789012:stream/orders"},
			`'streamName' "payments" and 'streamARN' (stream "orders") name different streams; set one of them`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseMetadata(tc.props)
			if tc.want == "" {
				// Dapr's truthy decoding reads anything it does not know as false; that is not an error.
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, strings.HasPrefix(err.Error(), "kinesis binding error:"), err.Error())
		})
	}
}

func TestParseMetadataNeverLeaksSecrets(t *testing.T) {
	_, err := parseMetadata(map[string]string{
		"secretKey": "TOPSECRET", "sessionToken": "TOPTOKEN", "accessKey": "AKIDSECRET", "mode": "bad",
	})
	require.Error(t, err)
	for _, s := range []string{"TOPSECRET", "TOPTOKEN", "AKIDSECRET"} {
		assert.NotContains(t, err.Error(), s)
	}
}

func TestInputReadyNeedsConsumerName(t *testing.T) {
	m, err := parseMetadata(map[string]string{"streamName": "s"})
	require.NoError(t, err)
	err = m.inputReady()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "'consumerName' is required by the input binding")

	m.ConsumerName = "app"
	require.NoError(t, m.inputReady())

	// The lease table is named after consumerName by default, so DynamoDB's rules apply to it.
	for name, want := range map[string]string{
		"ab":                     "'consumerName (the default lease table name)' must be 3 to 255 characters, got 2",
		"my app":                 "'consumerName' may contain only letters, digits",
		strings.Repeat("c", 129): "'consumerName' must be 1 to 128 characters",
	} {
		m.ConsumerName = name
		err := m.inputReady()
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), want)
	}
	m.ConsumerName, m.LeaseTableName = "ab", "leases"
	require.NoError(t, m.inputReady(), "an explicit lease table frees consumerName from the table rules")
	m.LeaseTableName = "x"
	assert.ErrorContains(t, m.inputReady(), "'leaseTableName' must be 3 to 255 characters")
}

// TestMetadataYAMLMatchesStruct keeps metadata.yaml, the struct and GetComponentMetadata in step.
func TestMetadataYAMLMatchesStruct(t *testing.T) {
	raw, err := os.ReadFile("metadata.yaml")
	require.NoError(t, err)
	var doc struct {
		Type        string                  `yaml:"type"`
		Name        string                  `yaml:"name"`
		Version     string                  `yaml:"version"`
		BuiltinAuth []struct{ Name string } `yaml:"builtinAuthenticationProfiles"`
		Metadata    []struct {
			Name    string `yaml:"name"`
			Type    string `yaml:"type"`
			Default string `yaml:"default"`
			Binding struct {
				Input  bool `yaml:"input"`
				Output bool `yaml:"output"`
			} `yaml:"binding"`
			Sensitive bool `yaml:"sensitive"`
		} `yaml:"metadata"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &doc))
	assert.Equal(t, "bindings", doc.Type)
	assert.Equal(t, "aws.kinesis", doc.Name)
	assert.Equal(t, "v1", doc.Version)
	require.Len(t, doc.BuiltinAuth, 1)
	assert.Equal(t, "aws", doc.BuiltinAuth[0].Name)

	info := (&AWSKinesis{}).GetComponentMetadata()
	var fromStruct []string
	for name, f := range info {
		if !f.Ignored {
			fromStruct = append(fromStruct, name)
		}
	}
	fromYAML := make([]string, 0, len(doc.Metadata))
	defaults := defaultMetadata()
	for _, f := range doc.Metadata {
		fromYAML = append(fromYAML, f.Name)
		if f.Default != "" {
			// Every documented default is the one the code applies.
			m, err := parseMetadata(map[string]string{"streamName": "s", f.Name: strings.Trim(f.Default, `"`)})
			require.NoError(t, err, f.Name)
			d := defaults
			d.StreamName = "s"
			require.NoError(t, d.validate())
			assert.Equal(t, d, m, "default of %s in metadata.yaml differs from the code", f.Name)
		}
	}
	slices.Sort(fromStruct)
	slices.Sort(fromYAML)
	assert.Equal(t, fromStruct, fromYAML)

	for _, secret := range []string{"accessKey", "secretKey", "sessionToken"} {
		f, ok := info[secret]
		require.True(t, ok, secret)
		assert.True(t, f.Ignored, "%s comes from the built-in aws profile", secret)
	}
}
