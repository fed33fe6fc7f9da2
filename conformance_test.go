package kinesis

// components-contrib's binding conformance suite, as it runs for bindings.aws.kinesis: the output,
// and the input in each mode.

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	conformance "github.com/dapr/components-contrib/tests/conformance/bindings"
	"github.com/dapr/kit/logger"
)

func TestConformanceOutput(t *testing.T) {
	stream := localaws.NewStream(t, 1)
	props := localProps(t, stream)
	cfg, err := conformance.NewTestConfig("aws.kinesis", []string{"operations", "create"}, map[string]any{
		"output": map[string]string{reqPartitionKey: "conformance"},
	})
	require.NoError(t, err)
	conformance.ConformanceTests(t, props, nil, NewAWSKinesis(logger.NewLogger("conformance")), cfg)

	recs := readShard(t, localaws.Get(t).KinesisClient(), stream, "shardId-000000000000")
	require.Len(t, recs, 1, "the conformance create lands on the stream")
	assert.Equal(t, "conformance", aws.ToString(recs[0].PartitionKey))
}

// Not parallel: the conformance suite keeps state in package variables.
func TestConformanceSharedRead(t *testing.T) {
	stream := localaws.NewStream(t, 1)
	props := shProps(t, stream, localaws.UniqueName("conformance"), "initialPosition", "")
	cfg, err := conformance.NewTestConfig("aws.kinesis", []string{"operations", "create", "read"}, map[string]any{
		"output":             map[string]string{reqPartitionKey: "conformance"},
		"readBindingTimeout": "30s",
	})
	require.NoError(t, err)
	conformance.ConformanceTests(t, props, NewAWSKinesis(logger.NewLogger("conformance-in")), NewAWSKinesis(logger.NewLogger("conformance-out")), cfg)
}

// Not parallel: the conformance suite keeps state in package variables.
func TestConformanceExtendedRead(t *testing.T) {
	stream := localaws.NewStream(t, 1)
	cfg, err := conformance.NewTestConfig("aws.kinesis", []string{"operations", "create", "read"}, map[string]any{
		"output":             map[string]string{reqPartitionKey: "conformance"},
		"readBindingTimeout": "30s",
	})
	require.NoError(t, err)
	in := NewAWSKinesis(logger.NewLogger("conformance-extended-in")).(*AWSKinesis)
	in.sdkHTTPClient = newFanoutFixClient()
	conformance.ConformanceTests(t, extendedProps(t, stream), in, NewAWSKinesis(logger.NewLogger("conformance-extended-out")), cfg)
}

// Not parallel: the conformance suite keeps state in package variables.
func TestConformanceQueueRead(t *testing.T) {
	srv := localaws.Get(t)
	stream := localaws.NewOnDemandStream(t)
	queues := localaws.NewQueueServer(t, srv.KinesisEndpoint)
	props := localProps(t, stream)
	props["endpoint"], props["mode"], props["consumerName"] = queues.URL(), "queue", localaws.UniqueName("conformance")
	cfg, err := conformance.NewTestConfig("aws.kinesis", []string{"operations", "create", "read"}, map[string]any{
		"output":             map[string]string{reqPartitionKey: "conformance"},
		"readBindingTimeout": "30s",
	})
	require.NoError(t, err)
	conformance.ConformanceTests(t, props, NewAWSKinesis(logger.NewLogger("conformance-queue-in")), NewAWSKinesis(logger.NewLogger("conformance-queue-out")), cfg)
}
