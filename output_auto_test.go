package kinesis

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/testlog"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/kit/logger"
)

// autoTarget is an on-demand stream behind the AUTO emulation (internal/localaws AutoDistribution),
// with component metadata and a client that both go through it.
type autoTarget struct {
	stream string
	proxy  *localaws.AutoDistribution
	client *kinesis.Client
	props  map[string]string
}

func newAutoTarget(t *testing.T, auto bool) autoTarget {
	t.Helper()
	srv := localaws.Get(t)
	tg := autoTarget{stream: localaws.NewOnDemandStream(t), proxy: localaws.NewAutoDistribution(t, srv.KinesisEndpoint)}
	tg.proxy.SetStrategy(tg.stream, auto)
	tg.client = srv.KinesisClient(func(o *kinesis.Options) { o.BaseEndpoint = aws.String(tg.proxy.URL()) })
	tg.props = localProps(t, tg.stream)
	tg.props["endpoint"] = tg.proxy.URL()
	return tg
}

// keysByData reads the stream (plain records only) and returns each record's partition key, or
// "<none>" for a record stored without one.
func (tg autoTarget) keysByData(t *testing.T) map[string]string {
	t.Helper()
	written, _ := readUserRecords(t, tg.client, tg.stream)
	out := map[string]string{}
	for _, w := range written {
		out[w.data] = w.key
	}
	return out
}

func TestOnAnAutoStreamRecordsWithoutAKeyAreWrittenWithout(t *testing.T) {
	t.Parallel()
	tg := newAutoTarget(t, true)
	b := newBinding(t, tg.props)

	resp, err := create(t.Context(), b, []byte("create-keyless"), nil)
	require.NoError(t, err)
	assert.NotEmpty(t, resp.Metadata[respSequenceNumber])
	_, err = create(t.Context(), b, []byte("create-keyed"), map[string]string{reqPartitionKey: "k"})
	require.NoError(t, err)
	results, _, err := bulkCreate(t.Context(), b, `[{"data":"bulk-keyless"},{"data":"bulk-keyed","partitionKey":"bk"}]`, nil)
	require.NoError(t, err)
	for i, r := range results {
		assert.Empty(t, r.ErrorCode, "entry %d: %s", i, r.ErrorMessage)
	}

	assert.Equal(t, map[string]string{
		"create-keyless": "", "create-keyed": "k",
		`"bulk-keyless"`: "", `"bulk-keyed"`: "bk",
	}, tg.keysByData(t), "no invented key where none was given; given keys as given")
}

func TestOnAnAutoStreamHashKeysAndOrderingAreRefusedNamingTheField(t *testing.T) {
	t.Parallel()
	tg := newAutoTarget(t, true)
	spy := newFaultClient(nil)
	b := newBinding(t, tg.props, func(b *AWSKinesis) { b.sdkHTTPClient = spy })

	for field, value := range map[string]string{
		reqExplicitHashKey:           "0",
		reqSequenceNumberForOrdering: "49590338271490256608559692538361571095921575989136588898",
	} {
		_, err := create(t.Context(), b, []byte("refused"), map[string]string{reqPartitionKey: "k", field: value})
		require.Error(t, err, field)
		assert.Contains(t, err.Error(), "request metadata '"+field+"' cannot be used: the stream places records itself (RecordDistributionStrategy AUTO)")
	}
	results, _, err := bulkCreate(t.Context(), b, `[{"data":"refused","explicitHashKey":"0"},{"data":"written"}]`, nil)
	require.NoError(t, err)
	require.Len(t, results, 2)
	assert.Equal(t, codeInvalidEntry, results[0].ErrorCode)
	assert.Contains(t, results[0].ErrorMessage, "'explicitHashKey' cannot be used")
	assert.Empty(t, results[1].ErrorCode)

	assert.Zero(t, spy.count("PutRecord"), "nothing sent for the refused creates")
	assert.Equal(t, 1, spy.count("PutRecords"), "the bulk's valid entry only")
	assert.Equal(t, map[string]string{`"written"`: ""}, tg.keysByData(t))
}

func TestAggregationKPLIsRefusedAtInitOnAnAutoStream(t *testing.T) {
	t.Parallel()
	tg := newAutoTarget(t, true)
	props := tg.props
	props["aggregation"] = "kpl"
	b := NewAWSKinesis(logger.NewLogger(t.Name())).(*AWSKinesis)
	err := b.Init(t.Context(), bindings.Metadata{Base: metadataBase(props)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "'aggregation' kpl cannot be used on stream")
	assert.Contains(t, err.Error(), "RecordDistributionStrategy AUTO")
	_, err = create(t.Context(), b, []byte("x"), nil)
	require.ErrorContains(t, err, "Invoke before Init", "a failed Init leaves nothing usable")
	require.NoError(t, b.Close())

	tg.proxy.SetStrategy(tg.stream, false)
	newBinding(t, props) // the same component on a stream that places records by key
}

// TestAggregationKPLGoesPlainOnceTheStreamSwitchesToAuto: a stream switched to AUTO while a
// producer aggregates gets plain records from the producer's next look at the stream on, with one
// warning, and no record is lost.
func TestAggregationKPLGoesPlainOnceTheStreamSwitchesToAuto(t *testing.T) {
	t.Parallel()
	tg := newAutoTarget(t, false)
	tg.props["aggregation"] = "kpl"
	log, logs := testlog.New(t)
	b := newBinding(t, tg.props, func(b *AWSKinesis) { b.logger, b.producerStreamRefresh = log, 200*time.Millisecond })
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	before := produceLanes(ctx, b, "before", 16, 5)
	tg.proxy.SetStrategy(tg.stream, true)
	stop := make(chan struct{})
	produced := make(chan []laneOutcome, 1)
	go func() { produced <- produceUntil(ctx, b, "during", 16, stop) }()
	const warning = "aggregation is off, records go out plain"
	testwait.Eventually(t, func() bool { return logs.Count(warning) > 0 }, 30*time.Second, 10*time.Millisecond,
		"the producer learns that the stream places records itself")
	close(stop)
	during := <-produced
	after := produceLanes(ctx, b, "after", 16, 5)

	written, _ := readUserRecords(t, tg.client, tg.stream)
	outcomes := append(append(before, during...), after...)
	requireWrittenOnce(t, written, outcomes)
	aggregated := map[string]int{}
	for _, w := range written {
		if w.sub >= 0 {
			aggregated[strings.SplitN(w.data, "|", 2)[0]]++
		}
	}
	assert.Positive(t, aggregated["before"], "aggregated while the stream placed records by key")
	assert.Zero(t, aggregated["after"], "no aggregate once the producer knew")
	assert.Equal(t, 1, logs.Count(warning), logs.String())
}
