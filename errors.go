package kinesis

import (
	"errors"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
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
	ErrClosed              = errors.New("kinesis binding error: binding is closed")
)
