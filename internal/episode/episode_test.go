package episode

import (
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/testlog"
)

func TestAnOperatorsProblemIsLoggedAgainEveryFiveMinutesWhileItLasts(t *testing.T) {
	log, logs := testlog.New(t)
	at := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	e := New(log, awserr.PermissionRead)
	e.now = func() time.Time { return at }
	disabled := &types.KMSDisabledException{Message: aws.String("key disabled")}
	for range 20 { // 20 failures over 9.5 minutes
		e.Failed("GetRecords", disabled, true)
		at = at.Add(30 * time.Second)
	}
	assert.Equal(t, 2, logs.Count("level=error"), logs.String())
	assert.Equal(t, 1, logs.Count("still failing after 11 attempts"), logs.String())
	assert.Equal(t, 2, logs.Count("the stream's KMS key is disabled"), logs.String())

	throttled := New(log, awserr.PermissionRead)
	for range 20 {
		throttled.Failed("GetRecords", &types.ProvisionedThroughputExceededException{}, false)
	}
	assert.Equal(t, 1, logs.Count("level=warning"), "a passing failure: once per episode")
}

func TestOneEpisodeAcrossLoops(t *testing.T) {
	log, logs := testlog.New(t)
	e := New(log, awserr.PermissionRead)
	denied := &types.AccessDeniedException{Message: aws.String("not authorized to perform: kinesis:ReceiveQueueRecords")}
	var wg sync.WaitGroup
	for range 4 { // four pollers failing together
		wg.Go(func() {
			for range 5 {
				e.Failed("Receiving from the queue", denied, awserr.OperatorMustAct(denied))
			}
		})
	}
	wg.Wait()
	e.Recovered("Receiving from the queue")
	assert.Equal(t, 1, logs.Count("level=error"), logs.String())
	assert.Equal(t, 1, logs.Count("Receiving from the queue works again after 20 failed attempts"), logs.String())
}
