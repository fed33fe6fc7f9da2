package kinesis

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// scanLeases reads every item of a lease table, as an operator would look at it.
func scanLeases(ctx context.Context, db *dynamodb.Client, table string) ([]map[string]dtypes.AttributeValue, error) {
	var items []map[string]dtypes.AttributeValue
	in := &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true)}
	for {
		out, err := db.Scan(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("scanning lease table %s: %w", table, err)
		}
		items = append(items, out.Items...)
		if len(out.LastEvaluatedKey) == 0 {
			return items, nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

func attrString(item map[string]dtypes.AttributeValue, key string) (string, bool) {
	v, ok := item[key].(*dtypes.AttributeValueMemberS)
	if !ok {
		return "", false
	}
	return v.Value, true
}
