package localaws

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDynamoDBMeterCountsWhatAWSWouldCharge: the units by AWS's rules (1 KB a write unit; 4 KB a
// read unit, halved when eventually consistent; a scan's items summed before rounding), calls,
// items and bytes by operation, and the client's answers as dynalite gave them.
func TestDynamoDBMeterCountsWhatAWSWouldCharge(t *testing.T) {
	t.Parallel()
	srv := Get(t)
	meter := NewDynamoDBMeter(t, srv.DynamoDBEndpoint)
	db, table := meteredTable(t, srv, meter)
	before := meter.Reading()

	item := func(id string, size int) map[string]dtypes.AttributeValue {
		return map[string]dtypes.AttributeValue{
			"ShardID": &dtypes.AttributeValueMemberS{Value: id},
			"Pad":     &dtypes.AttributeValueMemberS{Value: strings.Repeat("p", size)},
		}
	}
	for i := range 10 { // ~1 KB each: one write unit each; the scan reads ~10 KB
		_, putErr := db.PutItem(t.Context(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: item("s"+strconv.Itoa(i), 1000)})
		require.NoError(t, putErr)
	}
	_, err := db.PutItem(t.Context(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: item("big", 3000)})
	require.NoError(t, err)
	_, err = db.UpdateItem(t.Context(), &dynamodb.UpdateItemInput{
		TableName: aws.String(table), Key: map[string]dtypes.AttributeValue{"ShardID": &dtypes.AttributeValueMemberS{Value: "s0"}},
		UpdateExpression:          aws.String("SET Checkpoint = :c"),
		ExpressionAttributeValues: map[string]dtypes.AttributeValue{":c": &dtypes.AttributeValueMemberS{Value: "49590338271490256608559692538361571095921575989136588898"}},
	})
	require.NoError(t, err)
	got, err := db.GetItem(t.Context(), &dynamodb.GetItemInput{
		TableName: aws.String(table), ConsistentRead: aws.Bool(true),
		Key: map[string]dtypes.AttributeValue{"ShardID": &dtypes.AttributeValueMemberS{Value: "s1"}},
	})
	require.NoError(t, err)
	assert.NotEmpty(t, got.Item, "the client's answer is dynalite's")
	for _, consistent := range []bool{false, true} {
		_, err = db.Scan(t.Context(), &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(consistent)})
		require.NoError(t, err)
	}

	use := meter.Reading().Since(before)
	assert.Equal(t, OpUsage{Calls: 11, Items: 11, WriteUnits: 10 + 3}, withoutBytes(use["PutItem"]), "1 KB a write unit, rounded up per item")
	assert.Equal(t, OpUsage{Calls: 1, Items: 1, WriteUnits: 2}, withoutBytes(use["UpdateItem"]), "the item grew past 1 KB")
	assert.Equal(t, OpUsage{Calls: 1, Items: 1, ReadUnits: 1}, withoutBytes(use["GetItem"]))
	// 11 items, ~13.2 KB: 4 read units consistent, 2 eventually consistent.
	assert.Equal(t, OpUsage{Calls: 2, Items: 22, ReadUnits: 4 + 2}, withoutBytes(use["Scan"]))
	assert.Positive(t, use["Scan"].BytesIn)
	assert.Positive(t, use["PutItem"].BytesSent)
	total := use.Total()
	assert.Equal(t, 15, total.Calls)
	assert.InDelta(t, 15.0, total.WriteUnits, 0)
	assert.InDelta(t, 7.0, total.ReadUnits, 0)
}

// meteredTable creates a lease-shaped table through the meter and returns a client that goes
// through it.
func meteredTable(t *testing.T, srv *Servers, meter *DynamoDBMeter) (*dynamodb.Client, string) {
	t.Helper()
	db := srv.DynamoDBClient(func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(meter.URL()) })
	table := UniqueName("meter")
	_, err := db.CreateTable(t.Context(), &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []dtypes.AttributeDefinition{{AttributeName: aws.String("ShardID"), AttributeType: dtypes.ScalarAttributeTypeS}},
		KeySchema:            []dtypes.KeySchemaElement{{AttributeName: aws.String("ShardID"), KeyType: dtypes.KeyTypeHash}},
		BillingMode:          dtypes.BillingModePayPerRequest,
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = srv.DynamoDBClient().DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	waitTable(t, db, table)
	return db, table
}

func withoutBytes(u OpUsage) OpUsage {
	u.BytesSent, u.BytesIn = 0, 0
	return u
}

func waitTable(t *testing.T, db *dynamodb.Client, table string) {
	t.Helper()
	for range 200 {
		out, err := db.DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String(table)})
		if err == nil && out.Table.TableStatus == dtypes.TableStatusActive {
			return
		}
		time.Sleep(probeInterval)
	}
	t.Fatalf("table %s never ACTIVE", table)
}

// TestDynamoDBMeterCountsLabelledRequestsApart: a request MeterLabel names is counted under its
// operation and the label, with its own units; the others as before.
func TestDynamoDBMeterCountsLabelledRequestsApart(t *testing.T) {
	t.Parallel()
	srv := Get(t)
	meter := NewDynamoDBMeter(t, srv.DynamoDBEndpoint, MeterLabel(func(req map[string]json.RawMessage) string {
		if strings.Contains(string(req["Key"]), `"hot"`) {
			return "hot"
		}
		return ""
	}))
	db, table := meteredTable(t, srv, meter)
	before := meter.Reading()

	update := func(id string, size int) {
		_, updateErr := db.UpdateItem(t.Context(), &dynamodb.UpdateItemInput{
			TableName: aws.String(table), Key: map[string]dtypes.AttributeValue{"ShardID": &dtypes.AttributeValueMemberS{Value: id}},
			UpdateExpression:          aws.String("SET Filler = :p"),
			ExpressionAttributeValues: map[string]dtypes.AttributeValue{":p": &dtypes.AttributeValueMemberS{Value: strings.Repeat("p", size)}},
		})
		require.NoError(t, updateErr)
	}
	update("hot", 1500)
	update("hot", 10)
	update("cold", 10)
	_, err := db.GetItem(t.Context(), &dynamodb.GetItemInput{
		TableName: aws.String(table), ConsistentRead: aws.Bool(true),
		Key: map[string]dtypes.AttributeValue{"ShardID": &dtypes.AttributeValueMemberS{Value: "hot"}},
	})
	require.NoError(t, err)

	use := meter.Reading().Since(before)
	// The second write of "hot" shrinks it: charged by the larger image, 2 units.
	assert.Equal(t, OpUsage{Calls: 2, Items: 2, WriteUnits: 2 + 2}, withoutBytes(use["UpdateItem/hot"]))
	assert.Equal(t, OpUsage{Calls: 1, Items: 1, WriteUnits: 1}, withoutBytes(use["UpdateItem"]))
	assert.Equal(t, OpUsage{Calls: 1, Items: 1, ReadUnits: 1}, withoutBytes(use["GetItem/hot"]))
	assert.Zero(t, use["GetItem"].Calls)
}
