package leases

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/backoff"
	"github.com/dapr/kit/logger"
)

const (
	tableActivePollFirst = 50 * time.Millisecond
	tableActivePollMax   = time.Second
	// tableCreateTimeout bounds the wait for a new lease table when the caller's ctx has no deadline.
	tableCreateTimeout = 2 * time.Minute
)

// item is one lease as the table holds it.
type item struct {
	shardID    string
	owner      string
	timeout    string
	checkpoint string
	parent     string
	claim      string
	counter    int64
	hasCounter bool
}

// version identifies a state of the lease that only its owner moves on: the owner, its counter
// (renewals) and, for tables written without a counter, the lease timeout it rewrites at each renewal.
func (it item) version() string {
	return it.owner + "|" + strconv.FormatInt(it.counter, 10) + "|" + strconv.FormatBool(it.hasCounter) + "|" + it.timeout
}

func parseItem(av map[string]dtypes.AttributeValue) item {
	it := item{
		shardID:    attrString(av, AttrShardID),
		owner:      attrString(av, AttrOwner),
		timeout:    attrString(av, AttrTimeout),
		checkpoint: attrString(av, AttrCheckpoint),
		parent:     attrString(av, AttrParent),
		claim:      attrString(av, AttrClaim),
	}
	if n, ok := av[AttrCounter].(*dtypes.AttributeValueMemberN); ok {
		if c, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
			it.counter, it.hasCounter = c, true
		}
	}
	return it
}

func attrString(av map[string]dtypes.AttributeValue, key string) string {
	if v, ok := av[key].(*dtypes.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

func str(v string) dtypes.AttributeValue { return &dtypes.AttributeValueMemberS{Value: v} }

func num(n int64) dtypes.AttributeValue {
	return &dtypes.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func shardKey(shardID string) map[string]dtypes.AttributeValue {
	return map[string]dtypes.AttributeValue{AttrShardID: str(shardID)}
}

// table is the lease table's requests; policy lives in the coordinator.
type table struct {
	db   DynamoDB
	name string
}

// scan reads every lease (paginated, strongly consistent), and the heartbeat item with them.
func (t *table) scan(ctx context.Context) ([]item, roster, error) {
	var items []item
	beats := roster{beats: map[string]string{}}
	in := &dynamodb.ScanInput{TableName: aws.String(t.name), ConsistentRead: aws.Bool(true)}
	for {
		out, err := t.db.Scan(ctx, in)
		if err != nil {
			return nil, roster{}, fmt.Errorf("kinesis binding error: scanning lease table %s: %w", t.name, awserr.Classify(err))
		}
		for _, av := range out.Items {
			if attrString(av, AttrShardID) == HeartbeatKey {
				beats = parseRoster(av)
				continue
			}
			items = append(items, parseItem(av))
		}
		if len(out.LastEvaluatedKey) == 0 {
			return items, beats, nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// heartbeats reads the heartbeat item (strongly consistent: a stale read could show a live
// replica's heartbeat unchanged).
func (t *table) heartbeats(ctx context.Context) (roster, error) {
	out, err := t.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(t.name), Key: shardKey(HeartbeatKey), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return roster{}, fmt.Errorf("kinesis binding error: reading the heartbeats in lease table %s: %w", t.name, awserr.Classify(err))
	}
	return parseRoster(out.Item), nil
}

// update is a conditional UpdateItem of one lease that returns the lease as written.
type update struct {
	set       string
	remove    string
	add       string
	condition string
	names     map[string]string
	values    map[string]dtypes.AttributeValue
}

// placeholder matches the attribute name (#x) and value (:x) placeholders of an expression.
var placeholder = regexp.MustCompile(`[#:][A-Za-z0-9_]+`)

// errConditionFailed is what update returns when the table refused the write by its condition.
var errConditionFailed = errors.New("condition failed")

func (t *table) update(ctx context.Context, shardID, what string, u update) (item, error) {
	av, err := t.updateRaw(ctx, shardID, what, u)
	if err != nil {
		return item{}, err
	}
	return parseItem(av), nil
}

// updateRaw is update for any item of the table (a lease, or the heartbeat item); it returns the
// item as written.
func (t *table) updateRaw(ctx context.Context, key, what string, u update) (map[string]dtypes.AttributeValue, error) {
	expr := ""
	if u.set != "" {
		expr = "SET " + u.set
	}
	if u.remove != "" {
		expr += " REMOVE " + u.remove
	}
	if u.add != "" {
		expr += " ADD " + u.add
	}
	// DynamoDB refuses names and values an expression does not use: pass only those used.
	used := map[string]bool{}
	for _, tok := range placeholder.FindAllString(expr+" "+u.condition, -1) {
		used[tok] = true
	}
	in := &dynamodb.UpdateItemInput{
		TableName:        aws.String(t.name),
		Key:              shardKey(key),
		UpdateExpression: aws.String(strings.TrimSpace(expr)),
		ReturnValues:     dtypes.ReturnValueAllNew,
	}
	if u.condition != "" {
		in.ConditionExpression = aws.String(u.condition)
	}
	for k, v := range u.names {
		if used[k] {
			if in.ExpressionAttributeNames == nil {
				in.ExpressionAttributeNames = map[string]string{}
			}
			in.ExpressionAttributeNames[k] = v
		}
	}
	for k, v := range u.values {
		if used[k] {
			if in.ExpressionAttributeValues == nil {
				in.ExpressionAttributeValues = map[string]dtypes.AttributeValue{}
			}
			in.ExpressionAttributeValues[k] = v
		}
	}
	out, err := t.db.UpdateItem(ctx, in)
	switch {
	case awserr.IsConditionFailed(err):
		return nil, fmt.Errorf("kinesis binding error: %s (%s): %w", what, key, errConditionFailed)
	case err != nil:
		return nil, fmt.Errorf("kinesis binding error: %s (%s): %w", what, key, awserr.Classify(err))
	}
	return out.Attributes, nil
}

// names are the expression attribute names every lease write uses.
func names() map[string]string {
	return map[string]string{
		"#id": AttrShardID, "#owner": AttrOwner, "#timeout": AttrTimeout, "#cp": AttrCheckpoint,
		"#parent": AttrParent, "#claim": AttrClaim, "#counter": AttrCounter,
	}
}

// EnsureTable creates the lease table when missing (on-demand billing, hash key ShardID) and waits
// until it is ACTIVE. Replicas racing to create it all wait for it.
func EnsureTable(ctx context.Context, db DynamoDB, name string, log logger.Logger) error {
	if _, hasDeadline := ctx.Deadline(); !hasDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, tableCreateTimeout)
		defer cancel()
	}
	status, err := tableStatus(ctx, db, name)
	if err != nil {
		return err
	}
	if status == "" {
		_, err = db.CreateTable(ctx, &dynamodb.CreateTableInput{
			TableName:            aws.String(name),
			BillingMode:          dtypes.BillingModePayPerRequest,
			AttributeDefinitions: []dtypes.AttributeDefinition{{AttributeName: aws.String(AttrShardID), AttributeType: dtypes.ScalarAttributeTypeS}},
			KeySchema:            []dtypes.KeySchemaElement{{AttributeName: aws.String(AttrShardID), KeyType: dtypes.KeyTypeHash}},
		})
		var inUse *dtypes.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) {
			return fmt.Errorf("kinesis binding error: creating lease table %s: %w", name, awserr.Classify(err))
		}
		if err == nil {
			log.Infof("Created lease table %s (on-demand billing)", name)
		}
	}
	wait := tableActivePollFirst
	for status != dtypes.TableStatusActive {
		if !backoff.Sleep(ctx, wait) {
			return fmt.Errorf("kinesis binding error: lease table %s not ACTIVE (%s): %w", name, status, ctx.Err())
		}
		wait = min(2*wait, tableActivePollMax)
		if status, err = tableStatus(ctx, db, name); err != nil {
			return err
		}
	}
	return nil
}

// tableStatus returns the table's status, or "" when it does not exist.
func tableStatus(ctx context.Context, db DynamoDB, name string) (dtypes.TableStatus, error) {
	out, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)})
	var notFound *dtypes.ResourceNotFoundException
	if errors.As(err, &notFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("kinesis binding error: describing lease table %s: %w", name, awserr.Classify(err))
	}
	return out.Table.TableStatus, nil
}
