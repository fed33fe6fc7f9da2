package awserr

import (
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	smithy "github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWithKMSAdviceNamesTheKeyStateAndThePermission(t *testing.T) {
	for _, tc := range []struct {
		err   error
		state string
	}{
		{&types.KMSAccessDeniedException{Message: aws.String("denied")}, "access to the stream's KMS key is denied"},
		{&types.KMSDisabledException{Message: aws.String("disabled")}, "the stream's KMS key is disabled"},
		{&types.KMSInvalidStateException{Message: aws.String("pending deletion")}, "cannot be used (pending deletion or import, say)"},
		{&types.KMSNotFoundException{Message: aws.String("no such key")}, "the stream's KMS key was not found"},
		{&types.KMSOptInRequired{Message: aws.String("not subscribed")}, "the AWS account is not subscribed to KMS"},
		// A PutRecords entry's failure carries only the code.
		{&smithy.GenericAPIError{Code: "KMSDisabledException", Message: "entry"}, "the stream's KMS key is disabled"},
	} {
		for _, perm := range []string{PermissionRead, PermissionWrite} {
			for _, err := range []error{tc.err, Classify(tc.err)} {
				got := WithKMSAdvice(err, perm)
				assert.Contains(t, got.Error(), tc.state)
				assert.Contains(t, got.Error(), "the binding's credentials need "+perm+" on an enabled key")
				require.ErrorIs(t, got, ErrKMS)
				require.ErrorIs(t, got, tc.err, "the service's error stays in the chain")
				assert.Equal(t, 1, strings.Count(got.Error(), ErrKMS.Error()), got.Error())
			}
		}
	}
}

func TestWithKMSAdviceLeavesOtherErrorsAlone(t *testing.T) {
	for _, err := range []error{
		&types.KMSThrottlingException{Message: aws.String("slow down")}, // throttling: retried, not an operator's
		&types.AccessDeniedException{Message: aws.String("kinesis:PutRecords")},
		errors.New("connection reset"),
	} {
		assert.Equal(t, err, WithKMSAdvice(err, PermissionWrite))
	}
	assert.ErrorIs(t, Classify(&types.KMSThrottlingException{}), ErrThrottled)
}

// TestClassifyTakesDynamoDBAccessDeniedForADeniedPermission: DynamoDB's SDK has no type for it,
// only the code; the lease table's denials must read as an operator's problem too.
func TestClassifyTakesDynamoDBAccessDeniedForADeniedPermission(t *testing.T) {
	err := Classify(&smithy.GenericAPIError{Code: "AccessDeniedException", Message: "not authorized to perform: dynamodb:GetItem"})
	require.ErrorIs(t, err, ErrAccessDenied)
	assert.True(t, OperatorMustAct(err))
	assert.Contains(t, err.Error(), "dynamodb:GetItem")
}
