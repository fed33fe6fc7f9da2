package localaws

import (
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestUniqueName(t *testing.T) {
	valid := regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)
	tests := map[string]struct {
		prefix     string
		wantPrefix string
	}{
		"plain":         {"orders", "orders-"},
		"subtest name":  {"TestRead/one shard", "TestRead-one-shard-"},
		"non-ascii":     {"flüsse", "fl-sse-"},
		"empty":         {"", "-"},
		"too long":      {strings.Repeat("x", 200), strings.Repeat("x", 115) + "-"},
		"allowed punct": {"a_b.c-d", "a_b.c-d-"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := UniqueName(tt.prefix)
			assert.Regexp(t, valid, got)
			assert.True(t, strings.HasPrefix(got, tt.wantPrefix), "%q should start with %q", got, tt.wantPrefix)
			assert.Len(t, got, len(tt.wantPrefix)+12)
		})
	}
	first, second := UniqueName("x"), UniqueName("x")
	assert.NotEqual(t, first, second)
}

func TestNewStream(t *testing.T) {
	name := NewStream(t, 2)
	assert.True(t, strings.HasPrefix(name, "TestNewStream-"), name)

	client := Get(t).KinesisClient()
	sum, err := client.DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
	require.NoError(t, err)
	assert.Equal(t, types.StreamStatusActive, sum.StreamDescriptionSummary.StreamStatus)
	assert.EqualValues(t, 2, aws.ToInt32(sum.StreamDescriptionSummary.OpenShardCount))

	assertRoundTrip(t, client, name)
}

func TestCreateStreamOnKinesalite(t *testing.T) {
	s := Get(t)
	client := s.KinesaliteClient()
	name := UniqueName(t.Name())
	require.NoError(t, s.CreateStream(t.Context(), client, name, 1))

	assertRoundTrip(t, client, name)
}

// assertRoundTrip puts a record and reads it back from its shard.
func assertRoundTrip(t *testing.T, client *kinesis.Client, stream string) {
	t.Helper()
	put, err := client.PutRecord(t.Context(), &kinesis.PutRecordInput{
		StreamName: aws.String(stream), PartitionKey: aws.String("k"), Data: []byte("hello"),
	})
	require.NoError(t, err)
	it, err := client.GetShardIterator(t.Context(), &kinesis.GetShardIteratorInput{
		StreamName: aws.String(stream), ShardId: put.ShardId,
		ShardIteratorType: types.ShardIteratorTypeAtSequenceNumber, StartingSequenceNumber: put.SequenceNumber,
	})
	require.NoError(t, err)
	got, err := client.GetRecords(t.Context(), &kinesis.GetRecordsInput{ShardIterator: it.ShardIterator})
	require.NoError(t, err)
	require.NotEmpty(t, got.Records)
	assert.Equal(t, "hello", string(got.Records[0].Data))
}
