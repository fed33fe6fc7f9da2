package kinesis

import (
	"context"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/dapr/kit/logger"
)

// consumerClients are the SDK clients of one input consumer. They are the binding's clients
// (credentials, endpoints, retry policy, test seam) on a connection pool of their own, which the
// consumer closes when it stops so that no idle connection outlives it.
type consumerClients struct {
	// kinesis is handed to KCL: its requests end when the consumer aborts, start positions are
	// adapted (see kclRequests) and the shard listings KCL makes feed the lineage.
	kinesis *kinesis.Client
	// plainKinesis serves the consumer's own requests.
	plainKinesis *kinesis.Client
	// kclDynamoDB is handed to KCL's checkpointer: its requests end when the consumer aborts.
	kclDynamoDB *dynamodb.Client
	// dynamoDB serves the consumer's own lease-table requests, each bounded by its own context.
	dynamoDB *dynamodb.Client

	closeIdle func()
}

// newConsumerClients derives the consumer's clients from the binding's. KCL starts its requests with
// context.TODO(); abort is what ends them.
func (a *AWSKinesis) newConsumerClients(abort context.Context, lineage *shardLineage, log logger.Logger, kclOptions ...func(*kinesis.Options)) *consumerClients {
	httpClient, closeIdle := ownConnectionPool(a.client.Options().HTTPClient)
	useHTTP := func(o *kinesis.Options) { o.HTTPClient = httpClient }
	useHTTPDB := func(o *dynamodb.Options) { o.HTTPClient = httpClient }
	c := &consumerClients{
		plainKinesis: kinesis.NewFromConfig(a.awsCfg, a.kinesisOptions, useHTTP),
		dynamoDB:     dynamodb.NewFromConfig(a.awsCfg, a.dynamoDBOptions, useHTTPDB),
		closeIdle:    closeIdle,
	}
	lineage.client = c.plainKinesis
	kclOptions = append([]func(*kinesis.Options){a.kinesisOptions, useHTTP, func(o *kinesis.Options) {
		o.APIOptions = append(o.APIOptions, kclRequests(abort, lineage, newGetRecordsPacer(), log))
	}}, kclOptions...)
	c.kinesis = kinesis.NewFromConfig(a.awsCfg, kclOptions...)
	c.kclDynamoDB = dynamodb.NewFromConfig(a.awsCfg, a.dynamoDBOptions, useHTTPDB, func(o *dynamodb.Options) {
		o.APIOptions = append(o.APIOptions, abortWith(abort))
	})
	return c
}

// ownConnectionPool returns an HTTP client equivalent to base whose idle connections can be closed.
// The SDK's default BuildableClient hides its transport (GetTransport returns a copy, keeping TLS
// and proxy settings such as AWS_CA_BUNDLE); a plain *http.Client is used as it is.
func ownConnectionPool(base aws.HTTPClient) (aws.HTTPClient, func()) {
	switch c := base.(type) {
	case *awshttp.BuildableClient:
		tr := c.GetTransport()
		return &http.Client{Transport: tr, Timeout: c.GetTimeout()}, tr.CloseIdleConnections
	case interface{ CloseIdleConnections() }:
		return base, c.CloseIdleConnections
	default:
		return base, func() {}
	}
}

// kclRequests adapts KCL's Kinesis requests:
//   - they end when abort does (KCL passes context.TODO());
//   - a checkpoint inside a KPL aggregate ("seq:sub", see position.go) restarts AT that sequence
//     number, the processor skipping what was delivered;
//   - a shard without a checkpoint whose ancestors this application read before starts at
//     TRIM_HORIZON, not at initialPosition;
//   - each shard's GetRecords calls are spread evenly over a second (see getRecordsPacer);
//   - a GetRecords answer loses the KPL aggregates KCL cannot decode (see dropUndecodableAggregates),
//     and gets MillisBehindLatest 0 if it has none: KCL dereferences it unchecked;
//   - ListShards answers feed the lineage.
func kclRequests(abort context.Context, lineage *shardLineage, pacer *getRecordsPacer, log logger.Logger) func(*middleware.Stack) error {
	return func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("DaprKinesisKCLRequests",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				_, streaming := in.Parameters.(*kinesis.SubscribeToShardInput)
				ctx, release := bindToAbort(ctx, abort, streaming)
				defer release()

				var shardID string
				switch p := in.Parameters.(type) {
				case *kinesis.GetShardIteratorInput:
					in.Parameters = adaptIteratorStart(p, lineage)
					shardID = aws.ToString(p.ShardId)
				case *kinesis.SubscribeToShardInput:
					in.Parameters = adaptSubscribeStart(p, lineage)
				case *kinesis.GetRecordsInput:
					shardID = pacer.wait(ctx, p.ShardIterator)
				}
				out, md, err := next.HandleInitialize(ctx, in)
				if err != nil {
					return out, md, err
				}
				switch r := out.Result.(type) {
				case *kinesis.GetShardIteratorOutput:
					pacer.issued(r.ShardIterator, shardID)
				case *kinesis.GetRecordsOutput:
					pacer.issued(r.NextShardIterator, shardID)
					r.Records = dropUndecodableAggregates(r.Records, shardID, log)
					if r.MillisBehindLatest == nil {
						r.MillisBehindLatest = aws.Int64(0)
					}
				case *kinesis.ListShardsOutput:
					lineage.observe(r.Shards)
				}
				return out, md, err
			}), middleware.Before)
	}
}

// abortWith makes every request of a client end when abort does.
func abortWith(abort context.Context) func(*middleware.Stack) error {
	return func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("DaprKinesisAbort",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				ctx, release := bindToAbort(ctx, abort, false)
				defer release()
				return next.HandleInitialize(ctx, in)
			}), middleware.Before)
	}
}

// kclRequestTimeout bounds each request KCL makes (retries included), an event stream excepted. KCL
// passes no deadline, and a request stuck on a connection that died silently would stall its shard
// for good while the lease renewals, which run apart, keep it.
const kclRequestTimeout = 30 * time.Second

// bindToAbort derives from ctx a context that also ends with abort and, unless it is for an event
// stream, after kclRequestTimeout. The returned release frees it when the request is done, except for
// an event stream, which lives on after the call returns and is freed by abort.
func bindToAbort(ctx, abort context.Context, streaming bool) (context.Context, func()) {
	if streaming {
		// A subscription outlives this call. The fan-out guard (fanout.go) ends it on stop and
		// releases it when its stream closes; an AfterFunc here would stay registered until abort,
		// one per subscription (a new one every 5 minutes per shard).
		return ctx, func() {}
	}
	ctx, cancel := context.WithTimeout(ctx, kclRequestTimeout)
	stopWatching := context.AfterFunc(abort, cancel)
	return ctx, func() {
		stopWatching()
		cancel()
	}
}

func adaptIteratorStart(in *kinesis.GetShardIteratorInput, lineage *shardLineage) *kinesis.GetShardIteratorInput {
	shardID := aws.ToString(in.ShardId)
	switch in.ShardIteratorType {
	case types.ShardIteratorTypeAfterSequenceNumber:
		if pos, ok := parseCheckpoint(aws.ToString(in.StartingSequenceNumber)); ok {
			cp := *in
			cp.ShardIteratorType = types.ShardIteratorTypeAtSequenceNumber
			cp.StartingSequenceNumber = aws.String(pos.seq)
			return &cp
		}
	case types.ShardIteratorTypeLatest, types.ShardIteratorTypeAtTimestamp:
		if lineage.continuesReadLineage(shardID) {
			cp := *in
			cp.ShardIteratorType = types.ShardIteratorTypeTrimHorizon
			cp.Timestamp = nil
			return &cp
		}
	}
	return in
}

func adaptSubscribeStart(in *kinesis.SubscribeToShardInput, lineage *shardLineage) *kinesis.SubscribeToShardInput {
	if in.StartingPosition == nil {
		return in
	}
	start := *in.StartingPosition
	switch start.Type {
	case types.ShardIteratorTypeAfterSequenceNumber:
		pos, ok := parseCheckpoint(aws.ToString(start.SequenceNumber))
		if !ok {
			return in
		}
		start.Type = types.ShardIteratorTypeAtSequenceNumber
		start.SequenceNumber = aws.String(pos.seq)
	case types.ShardIteratorTypeLatest, types.ShardIteratorTypeAtTimestamp:
		if !lineage.continuesReadLineage(aws.ToString(in.ShardId)) {
			return in
		}
		start = types.StartingPosition{Type: types.ShardIteratorTypeTrimHorizon}
	default:
		return in
	}
	cp := *in
	cp.StartingPosition = &start
	return &cp
}
