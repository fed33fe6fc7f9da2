package kinesis

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
)

// Sentinels callers can test with errors.Is; classifyAWSError wraps the SDK error under one of them so
// both the class and the AWS detail stay in the chain.
var (
	ErrStreamNotFound      = errors.New("stream not found")
	ErrAccessDenied        = errors.New("access denied")
	ErrThrottled           = errors.New("throughput exceeded")
	ErrKMS                 = errors.New("KMS key unusable")
	ErrInvalidCredentials  = errors.New("invalid credentials")
	ErrEndpointUnreachable = errors.New("endpoint unreachable")
	ErrClosed              = errors.New("kinesis binding error: binding is closed")
)

// classifyAWSError names what went wrong in terms an operator acts on.
func classifyAWSError(err error) error {
	if err == nil {
		return nil
	}
	var (
		notFound   *types.ResourceNotFoundException
		denied     *types.AccessDeniedException
		throughput *types.ProvisionedThroughputExceededException
		kmsThrottl *types.KMSThrottlingException
		limit      *types.LimitExceededException
		kmsDenied  *types.KMSAccessDeniedException
		kmsOff     *types.KMSDisabledException
		kmsState   *types.KMSInvalidStateException
		kmsMissing *types.KMSNotFoundException
		kmsOptIn   *types.KMSOptInRequired
		opErr      *net.OpError
		dnsErr     *net.DNSError
		apiErr     smithy.APIError
	)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &notFound):
		return fmt.Errorf("%w: %w", ErrStreamNotFound, err)
	case errors.As(err, &denied):
		return fmt.Errorf("%w: %w", ErrAccessDenied, err)
	case errors.As(err, &throughput), errors.As(err, &kmsThrottl), errors.As(err, &limit):
		return fmt.Errorf("%w: %w", ErrThrottled, err)
	case errors.As(err, &kmsDenied), errors.As(err, &kmsOff), errors.As(err, &kmsState),
		errors.As(err, &kmsMissing), errors.As(err, &kmsOptIn):
		return fmt.Errorf("%w: %w", ErrKMS, err)
	case errors.As(err, &apiErr) && isCredentialsErrorCode(apiErr.ErrorCode()):
		return fmt.Errorf("%w: %w", ErrInvalidCredentials, err)
	case errors.As(err, &apiErr) && isThrottleErrorCode(apiErr.ErrorCode()):
		return fmt.Errorf("%w: %w", ErrThrottled, err)
	case errors.As(err, &dnsErr), errors.As(err, &opErr):
		return fmt.Errorf("%w: %w", ErrEndpointUnreachable, err)
	}
	return err
}

func isCredentialsErrorCode(code string) bool {
	switch code {
	case "UnrecognizedClientException", "InvalidSignatureException", "IncompleteSignature",
		"MissingAuthenticationToken", "ExpiredTokenException", "InvalidClientTokenId", "SignatureDoesNotMatch":
		return true
	}
	return false
}

func isThrottleErrorCode(code string) bool {
	switch code {
	case "ThrottlingException", "Throttling", "RequestLimitExceeded", "SlowDown":
		return true
	}
	return false
}

// isRetryable tells whether an operation that failed with err may succeed if tried again unchanged.
func isRetryable(err error) bool {
	return errors.Is(err, ErrThrottled)
}
