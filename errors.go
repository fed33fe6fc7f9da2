package kinesis

import (
	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/producer"
)

// Sentinels callers can test with errors.Is. An error from an AWS call is wrapped under one of them,
// so both the class and the AWS detail stay in the chain.
var (
	ErrStreamNotFound      = awserr.ErrStreamNotFound
	ErrAccessDenied        = awserr.ErrAccessDenied
	ErrThrottled           = awserr.ErrThrottled
	ErrKMS                 = awserr.ErrKMS
	ErrInvalidCredentials  = awserr.ErrInvalidCredentials
	ErrEndpointUnreachable = awserr.ErrEndpointUnreachable
	ErrClosed              = producer.ErrClosed
)
