package kinesis

import (
	"context"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/smithy-go/middleware"
)

const (
	// consumerKinesisTimeout bounds each Kinesis request of the input side, SubscribeToShard excepted
	// (its event stream lives for minutes): a request stuck on a connection that died silently would
	// otherwise stall its shard for good while the lease renewals, which run apart, keep it.
	consumerKinesisTimeout = 30 * time.Second
	// minLeaseRequestTimeout is the least time a lease-table request may take; otherwise half the
	// lease, so that a stuck renewal gives way to the next one while the lease still holds.
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
