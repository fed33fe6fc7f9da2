package kinesis

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const kmsWriteAdvice = "the binding's credentials need kms:GenerateDataKey on an enabled key"

// TestCreateOnAStreamWhoseKMSKeyCannotBeUsedSaysWhatToFix: a stream encrypted with a key the
// producer may not use fails the put with an error that names the key's state and the permission,
// whether the whole request was refused or one entry; the binding goes on once the key works.
func TestCreateOnAStreamWhoseKMSKeyCannotBeUsedSaysWhatToFix(t *testing.T) {
	t.Parallel()
	stream := kinesaliteStream(t, 1)

	t.Run("request refused", func(t *testing.T) {
		faults := newFaultClient(func(op string, call int, req *http.Request) *http.Response {
			if op == "PutRecords" && call == 1 {
				return awsErrorResponse(req, http.StatusBadRequest, "KMSDisabledException", "The key is disabled")
			}
			return nil
		})
		b := newBinding(t, kinesaliteProps(t, stream), func(b *AWSKinesis) { b.sdkHTTPClient = faults })
		_, err := create(t.Context(), b, []byte("x"), map[string]string{reqPartitionKey: "k"})
		require.ErrorIs(t, err, ErrKMS)
		assert.Contains(t, err.Error(), "the stream's KMS key is disabled; "+kmsWriteAdvice)
		assert.Contains(t, err.Error(), "(the record was not written)")
		_, err = create(t.Context(), b, []byte("y"), map[string]string{reqPartitionKey: "k"})
		require.NoError(t, err, "the key works again")
		assert.Equal(t, 2, faults.count("PutRecords"), "not retried")
	})

	t.Run("entry refused", func(t *testing.T) {
		spy := newPutSpy()
		spy.fail = func(key string, _ int) string {
			if key == "denied" {
				return "KMSAccessDeniedException"
			}
			return ""
		}
		b := newBinding(t, kinesaliteProps(t, stream), spy.install)
		_, err := create(t.Context(), b, []byte("x"), map[string]string{reqPartitionKey: "denied"})
		require.ErrorIs(t, err, ErrKMS)
		assert.Contains(t, err.Error(), "access to the stream's KMS key is denied; "+kmsWriteAdvice)

		results, _, err := bulkCreate(t.Context(), b, `[{"data":1,"partitionKey":"denied"},{"data":2,"partitionKey":"fine"}]`, nil)
		require.NoError(t, err)
		require.Len(t, results, 2)
		assert.Equal(t, "KMSAccessDeniedException", results[0].ErrorCode)
		assert.Contains(t, results[0].ErrorMessage, kmsWriteAdvice)
		assert.Empty(t, results[1].ErrorCode)
	})
}
