// Package awserr names what went wrong in an AWS call in terms an operator acts on: sentinels callers
// test with errors.Is, wrapped around the SDK error so that both the class and the detail stay in
// the chain.
package awserr

import (
	"context"
	"errors"
	"fmt"
	"net"

	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
)

// Sentinels callers can test with errors.Is; Classify wraps the SDK error under one of them.
var (
	ErrStreamNotFound      = errors.New("stream not found")
	ErrAccessDenied        = errors.New("access denied")
	ErrThrottled           = errors.New("throughput exceeded")
	ErrKMS                 = errors.New("KMS key unusable")
	ErrInvalidCredentials  = errors.New("invalid credentials")
	ErrEndpointUnreachable = errors.New("endpoint unreachable")
)

// Classify wraps err under the sentinel of its class; errors of no known class are returned as they are.
func Classify(err error) error {
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
	case errors.As(err, &apiErr) && apiErr.ErrorCode() == "AccessDeniedException":
		// DynamoDB's (the lease table): its SDK has no type for it.
		return fmt.Errorf("%w: %w", ErrAccessDenied, err)
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
	case "ThrottlingException", "Throttling", "RequestLimitExceeded", "SlowDown",
		// DynamoDB's, for the lease table.
		"ProvisionedThroughputExceededException", "ThrottledException":
		return true
	}
	return false
}

// IsRetryable tells whether an operation that failed with err (as Classify returns it) may succeed if
// tried again unchanged.
func IsRetryable(err error) bool {
	return errors.Is(err, ErrThrottled)
}

// IsConditionFailed reports whether a DynamoDB write was refused by its condition.
func IsConditionFailed(err error) bool {
	var ccf *dtypes.ConditionalCheckFailedException
	return errors.As(err, &ccf)
}

// OperatorMustAct reports failures that retrying alone does not end: a denied permission, bad
// credentials, a missing stream or queue, an unusable KMS key.
func OperatorMustAct(err error) bool {
	err = Classify(err)
	return errors.Is(err, ErrAccessDenied) || errors.Is(err, ErrInvalidCredentials) ||
		errors.Is(err, ErrStreamNotFound) || errors.Is(err, ErrKMS)
}

// KMS permissions a stream encrypted with a customer-managed key asks of its readers and writers.
const (
	PermissionRead  = "kms:Decrypt"
	PermissionWrite = "kms:GenerateDataKey"
)

// WithKMSAdvice says, for an error about the stream's KMS key, what an operator must fix: the
// key's state and the permission the call needs (PermissionRead or PermissionWrite). It works on
// the service's exceptions and on PutRecords entries' error codes alike; any other error, and
// KMSThrottlingException (throttling, retried), is returned as it is. The result is under ErrKMS.
func WithKMSAdvice(err error, permission string) error {
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		return err
	}
	var state string
	switch apiErr.ErrorCode() {
	case "KMSAccessDeniedException":
		state = "access to the stream's KMS key is denied"
	case "KMSDisabledException":
		state = "the stream's KMS key is disabled"
	case "KMSInvalidStateException":
		state = "the stream's KMS key is in a state that cannot be used (pending deletion or import, say)"
	case "KMSNotFoundException":
		state = "the stream's KMS key was not found"
	case "KMSOptInRequired":
		state = "the AWS account is not subscribed to KMS"
	default:
		return err
	}
	advice := fmt.Sprintf("%s; the binding's credentials need %s on an enabled key", state, permission)
	if errors.Is(err, ErrKMS) {
		return fmt.Errorf("%s: %w", advice, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrKMS, advice, err)
}
