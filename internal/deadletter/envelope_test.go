package deadletter

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/delivery"
	"github.com/dapr-kinesis/kinesis/internal/position"
)

// The README documents this JSON; a change here is a change for every tool that reads dead letters.
func TestEnvelopeJSONIsTheDocumentedOne(t *testing.T) {
	arrived := time.Date(2026, 12, 3, 9, 15, 4, 321_000_000, time.FixedZone("CET", 3600))
	d := delivery.DeadLetter{
		Record: types.Record{
			Data: []byte(`{"order":42}`), PartitionKey: aws.String("customer-7"), ApproximateArrivalTimestamp: aws.Time(arrived),
		},
		ShardID:  "shardId-000000000003",
		Position: position.Position{Seq: "49590338271490256608559692538361571095921575989136588850", Sub: 2},
		Attempts: 5,
		Reason:   "app answered 500",
	}
	body, err := json.Marshal(NewEnvelope(&d, "orders", time.Date(2026, 12, 3, 8, 16, 0, 5_000_000, time.UTC)))
	require.NoError(t, err)
	assert.JSONEq(t, `{
		"data": "eyJvcmRlciI6NDJ9",
		"partitionKey": "customer-7",
		"streamName": "orders",
		"shardId": "shardId-000000000003",
		"sequenceNumber": "49590338271490256608559692538361571095921575989136588850",
		"subSequenceNumber": 2,
		"approximateArrivalTimestamp": "2026-12-03T08:15:04.321Z",
		"attempts": 5,
		"error": "app answered 500",
		"deadLetteredAt": "2026-12-03T08:16:00.005Z"
	}`, string(body))

	d.Position.Sub = -1
	plain, err := json.Marshal(NewEnvelope(&d, "orders", time.Now()))
	require.NoError(t, err)
	assert.NotContains(t, string(plain), "subSequenceNumber", "only user records of an aggregate have one")

	d.Record.PartitionKey = nil // written without one, on a stream that places records itself
	keyless, err := json.Marshal(NewEnvelope(&d, "orders", time.Now()))
	require.NoError(t, err)
	assert.NotContains(t, string(keyless), "partitionKey", "no key is invented for a record that had none")
}
