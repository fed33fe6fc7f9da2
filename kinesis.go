// Package kinesis is Dapr's bindings.aws.kinesis component: an output binding that puts records on an
// AWS Kinesis data stream and an input binding that consumes it, under shard leases and checkpoints
// kept in a DynamoDB lease table, by polling (shared mode) or through enhanced fan-out (extended
// mode). The producer (internal/producer) and the consumer engine (internal/engine, leases,
// shardread, delivery) live under internal/; this package parses Dapr's requests and metadata and
// wires them to those (README: "Layout").
//
// It is a drop-in for components-contrib's bindings/aws/kinesis: daprd builds register
// [NewAWSKinesis] for both sides (README: "Building a daprd with this binding"), and the examples
// here use it from Go without daprd. The README documents the component's metadata ("Metadata"),
// the operations and their answers ("Output: create", "Output: bulkCreate"), what a handler gets
// and when a record is delivered again ("Input: what your app receives"), the two modes, the lease
// table and the IAM permissions. CHANGELOG.md says what changed between versions.
package kinesis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/producer"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/health"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"
)

// AWSKinesis is the binding. One instance serves either side; daprd creates one per direction.
type AWSKinesis struct {
	logger logger.Logger

	meta          kinesisMetadata
	awsCfg        aws.Config
	client        *kinesis.Client
	dynamoDB      *dynamodb.Client
	producer      *producer.Producer
	sdkHTTPClient aws.HTTPClient   // test seam only: set by tests in this package, never by metadata
	wallClock     func() time.Time // test seam only: the clock lease timeouts are written with
	// test seams only: how long the producer's Close waits for requests in flight, and how often it
	// asks the stream how it places records (0: their defaults)
	producerCloseGrace, producerStreamRefresh time.Duration

	closed   atomic.Bool
	closeCh  chan struct{}
	closeMu  sync.Mutex
	inputs   []io.Closer
	initDone atomic.Bool
}

var (
	_ bindings.InputOutputBinding = (*AWSKinesis)(nil)
	_ health.Pinger               = (*AWSKinesis)(nil)
)

// NewAWSKinesis returns the binding, ready for Init.
func NewAWSKinesis(log logger.Logger) bindings.InputOutputBinding {
	return &AWSKinesis{logger: log, closeCh: make(chan struct{})}
}

// Init parses the metadata and builds the AWS clients. Nothing is sent to AWS (daprd calls Init for
// both directions, and a stream that is missing is reported by Ping and by the first call), except
// with aggregation kpl: then one DescribeStreamSummary makes sure the stream places records by key.
func (a *AWSKinesis) Init(ctx context.Context, md bindings.Metadata) error {
	if a.closed.Load() {
		return ErrClosed
	}
	m, err := parseMetadata(md.Properties)
	if err != nil {
		return err
	}
	cfg, err := newAWSConfig(ctx, m.authOptions(a.logger, md.Properties))
	if err != nil {
		return fmt.Errorf("kinesis binding error: loading AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return errors.New("kinesis binding error: 'region' is required (or set AWS_REGION in the environment)")
	}

	a.meta = m
	a.awsCfg = cfg
	a.client = kinesis.NewFromConfig(cfg, a.kinesisOptions)
	a.dynamoDB = dynamodb.NewFromConfig(cfg, a.dynamoDBOptions)
	a.producer = a.newProducer()
	if err := a.checkAggregation(ctx); err != nil {
		a.producer = nil
		return err
	}
	a.initDone.Store(true)
	return nil
}

// kinesisOptions tunes the SDK client. Throttling is retried by this binding, with its own backoff,
// until the caller's deadline; the SDK retries only transient faults, and without its retry quota,
// which would otherwise turn a throttled burst into hard failures.
func (a *AWSKinesis) kinesisOptions(o *kinesis.Options) {
	o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
		so.RateLimiter = ratelimit.None
		so.Retryables = append([]retry.IsErrorRetryable{leaveThrottlingToBinding{}}, so.Retryables...)
	})
	if a.sdkHTTPClient != nil {
		o.HTTPClient = a.sdkHTTPClient
	}
	if a.meta.StreamARN != "" {
		o.APIOptions = append(o.APIOptions, addressByARN(a.meta.StreamName, a.meta.StreamARN))
	}
}

// dynamoDBOptions points the lease-table client at its endpoint. Its requests recur every shard
// sync, so the SDK's retry quota would only turn an outage into "retry quota exceeded" errors.
func (a *AWSKinesis) dynamoDBOptions(o *dynamodb.Options) {
	o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) { so.RateLimiter = ratelimit.None })
	if ep := a.meta.dynamoDBEndpoint(); ep != "" {
		o.BaseEndpoint = aws.String(ep)
	}
	if a.sdkHTTPClient != nil {
		o.HTTPClient = a.sdkHTTPClient
	}
}

// Operations lists what Invoke accepts.
func (a *AWSKinesis) Operations() []bindings.OperationKind {
	return supportedOperations
}

// Ping checks that the stream exists and can be described with the configured credentials.
func (a *AWSKinesis) Ping(ctx context.Context) error {
	if !a.initDone.Load() {
		return errors.New("kinesis binding error: ping before Init")
	}
	if _, err := a.producer.Describe(ctx); err != nil {
		return fmt.Errorf("kinesis binding error: ping stream %q: %w", a.meta.StreamName, err)
	}
	return nil
}

// Close stops the input side, if it runs, and the producer. It is idempotent and safe to call
// concurrently; later calls return nil at once.
func (a *AWSKinesis) Close() error {
	if !a.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(a.closeCh)

	a.closeMu.Lock()
	inputs := a.inputs
	a.inputs = nil
	a.closeMu.Unlock()

	closers := inputs
	if a.producer != nil {
		closers = append(closers, a.producer)
	}
	// Each side bounds its own Close at about 5 s; closing them together keeps the whole within that.
	errs := make([]error, len(closers))
	var wg sync.WaitGroup
	for i, c := range closers {
		wg.Go(func() { errs[i] = c.Close() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// GetComponentMetadata returns the metadata fields, derived from the struct metadata.yaml mirrors.
func (a *AWSKinesis) GetComponentMetadata() (info metadata.MetadataMap) {
	_ = metadata.GetMetadataInfoFromStructType(reflect.TypeOf(kinesisMetadata{}), &info, metadata.BindingType)
	return info
}

// leaveThrottlingToBinding stops the SDK from retrying throttling errors itself.
type leaveThrottlingToBinding struct{}

func (leaveThrottlingToBinding) IsErrorRetryable(err error) aws.Ternary {
	if awserr.IsRetryable(awserr.Classify(err)) {
		return aws.FalseTernary
	}
	return aws.UnknownTernary
}
