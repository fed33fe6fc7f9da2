package kinesis

import (
	"context"
	"net/http"
	"reflect"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/smithy-go/middleware"
)

const (
	// consumerKinesisTimeout bounds each Kinesis request of the input side, SubscribeToShard excepted
	// (its event stream lives for minutes): a request stuck on a connection that died silently would
	// otherwise stall its shard for good while the heartbeats, which run apart, keep its lease.
	consumerKinesisTimeout = 30 * time.Second
	// minLeaseRequestTimeout is the least time a lease-table request may take; otherwise half the
	// lease, so that a stuck heartbeat gives way to the next one while the lease still holds.
	minLeaseRequestTimeout = time.Second
)

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

// boundRequests gives every request of a client, retries included, a deadline of timeout at most;
// an event stream (SubscribeToShard) is left alone, its reader ends it.
func boundRequests(timeout time.Duration) func(*middleware.Stack) error {
	return func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("DaprKinesisRequestTimeout",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				if _, streaming := in.Parameters.(*kinesis.SubscribeToShardInput); streaming {
					return next.HandleInitialize(ctx, in)
				}
				ctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				return next.HandleInitialize(ctx, in)
			}), middleware.Before)
	}
}

// addressByARN makes every request of a client that names the stream by streamName name it by arn
// instead. A stream of another account (shared through a resource policy) can only be named by its
// ARN, and every data-plane call takes one; doing it here, where the client is built, keeps the
// callers (producer, lease coordinator, shard readers) naming the stream one way. Requests for
// other streams (the dead-letter stream) are left as they are.
func addressByARN(streamName, arn string) func(*middleware.Stack) error {
	return func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("DaprKinesisStreamARN",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				if byARN, ok := withStreamARN(in.Parameters, streamName, arn); ok {
					in.Parameters = byARN
				}
				return next.HandleInitialize(ctx, in)
			}), middleware.Before)
	}
}

// withStreamARN returns a copy of params, a pointer to an operation's input, that names the stream
// by arn instead of by streamName; ok is false when params does not name that stream by name. The
// caller's input is not changed: it may be reused, or read by another goroutine.
func withStreamARN(params any, streamName, arn string) (byARN any, ok bool) {
	v := reflect.ValueOf(params)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil, false
	}
	name, arnField := v.Elem().FieldByName("StreamName"), v.Elem().FieldByName("StreamARN")
	stringPtr := reflect.TypeFor[*string]()
	if !name.IsValid() || !arnField.IsValid() || name.Type() != stringPtr || arnField.Type() != stringPtr {
		return nil, false
	}
	if name.IsNil() || name.Elem().String() != streamName || !arnField.IsNil() {
		return nil, false
	}
	out := reflect.New(v.Elem().Type())
	out.Elem().Set(v.Elem())
	out.Elem().FieldByName("StreamName").SetZero()
	out.Elem().FieldByName("StreamARN").Set(reflect.ValueOf(aws.String(arn)))
	return out.Interface(), true
}
