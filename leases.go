package kinesis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/backoff"
	"github.com/dapr/kit/logger"
)

var (
	// errLeaseLost is returned by a checkpoint when another worker owns the shard.
	errLeaseLost = errors.New("kinesis binding error: the shard's lease is held by another worker")
	// errConsumerStopping makes KCL's event loop, lease renewals and parent waits end quickly once
	// the consumer stops: KCL checks its own stop signal only between reads.
	errConsumerStopping = errors.New("kinesis binding error: consumer is stopping")
)

const (
	tableActivePollFirst = 50 * time.Millisecond
	tableActivePollMax   = time.Second
	// tableCreateTimeout bounds Read's wait for a new lease table when its ctx has no deadline.
	tableCreateTimeout = 2 * time.Minute
)

// leaseStore is the lease table as KCL and the record processors see it. It is KCL's checkpointer
// (chk.Checkpointer), delegating to KCL's DynamoDB implementation where that is sound, and doing
// itself what KCL gets wrong:
//   - a checkpoint is a conditional update of the Checkpoint attribute only, accepted while this
//     worker owns the lease (KCL overwrites the whole item unconditionally, so a worker that lost its
//     lease could move the new owner's checkpoint and drop a pending steal claim);
//   - leases without a checkpoint count as assigned when balancing (KCL ignores them, so replicas
//     never share an idle stream);
//   - a lease another worker held at the last scan, and still holds by its timeout, is not read
//     again at every shard sync (KCL reads each such lease twice a tick, only to find it taken: with
//     64 shards and 3 replicas, some 500 strongly consistent reads a second for nothing);
//   - a pending steal claim counts for the claimant when balancing (KCL counts the shard for its
//     owner until the handover, so a worker claimed one shard per shard sync until its count caught
//     up, and replicas that joined together stripped the first one of every shard, then stole them
//     back, again and again);
//   - shard status is read and written under its lock (KCL writes LeaseTimeout without it);
//   - once stopping, KCL can take no new lease and renew none, and its waits end;
//   - it remembers the leases it holds, so that Close can release them even when KCL's worker hangs.
type leaseStore struct {
	kclStore *chk.DynamoCheckpoint // on a client whose requests end when the consumer aborts
	db       *dynamodb.Client      // for this type's own requests, each with a context
	table    string
	workerID string
	lineage  *shardLineage
	log      logger.Logger

	// abortCtx bounds the requests KCL starts without a context.
	abortCtx   context.Context //nolint:containedctx // KCL's checkpointer interface passes no context
	parentPoll time.Duration
	scanEvery  time.Duration
	// claimTimeout is how long after the lease's timeout a steal claim still holds (KCL's
	// LeaseStealingClaimTimeoutMillis).
	claimTimeout time.Duration

	stopped atomic.Bool
	mu      sync.Mutex
	held    map[string]struct{}  // leases this worker holds
	claimed map[string]time.Time // steal claims this worker placed and has not turned into leases, and when
	// claimants maps each shard with a live steal claim to the claiming worker, as of the last scan.
	claimants map[string]string
	// foreign holds the leases other workers held at the last scan.
	foreign  map[string]foreignLease
	lastScan time.Time // only KCL's event loop calls ListActiveWorkers
}

var _ chk.Checkpointer = (*leaseStore)(nil)

// foreignLease is a lease another worker held at the last scan.
type foreignLease struct {
	owner      string
	checkpoint string
	timeout    time.Time
}

func (s *leaseStore) stopping() bool { return s.stopped.Load() }

// beginStop makes every later lease acquisition, renewal and checkpoint lookup by KCL fail at once.
func (s *leaseStore) beginStop() { s.stopped.Store(true) }

// Init is a no-op: startShared creates the lease table, with on-demand billing, before the worker
// starts (KCL would create it with provisioned capacity and not wait until it is ACTIVE).
func (s *leaseStore) Init() error { return nil }

// GetLease takes or renews a lease through KCL, and remembers the leases this worker holds.
func (s *leaseStore) GetLease(shard *par.ShardStatus, owner string) error {
	if s.stopping() {
		return errConsumerStopping
	}
	if l, ok := s.liveForeignLease(shard.ID); ok && owner == s.workerID {
		// KCL's answer for a lease that is not free, without reading it again.
		return fmt.Errorf("kinesis binding error: shard %s is held by %s until %s (last lease scan): %w",
			shard.ID, l.owner, l.timeout.Format(time.RFC3339Nano), chk.ErrLeaseNotAcquired{})
	}
	if err := s.kclStore.GetLease(shard, owner); err != nil {
		return err
	}
	if owner == s.workerID {
		s.mu.Lock()
		s.held[shard.ID] = struct{}{}
		delete(s.claimed, shard.ID) // KCL's lease write drops the claim
		delete(s.foreign, shard.ID)
		s.mu.Unlock()
	}
	return nil
}

// liveForeignLease returns the lease another worker held at the last scan while, by this worker's
// clock, it has not expired: KCL would not take it then. Shards this worker holds or has claimed
// are always read afresh: a claimed lease is handed over before the claimant's next scan.
func (s *leaseStore) liveForeignLease(shardID string) (foreignLease, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.foreign[shardID]
	if !ok || !time.Now().Before(l.timeout) {
		return foreignLease{}, false
	}
	if _, held := s.held[shardID]; held {
		return foreignLease{}, false
	}
	if _, claimed := s.claimed[shardID]; claimed {
		return foreignLease{}, false
	}
	return l, true
}

// CheckpointSequence writes the shard's checkpoint if this worker still owns the shard.
func (s *leaseStore) CheckpointSequence(shard *par.ShardStatus) error {
	_, err := s.db.UpdateItem(s.abortCtx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      shardKey(shard.ID),
		UpdateExpression:         aws.String("SET #cp = :cp"),
		ConditionExpression:      aws.String("#owner = :me"),
		ExpressionAttributeNames: map[string]string{"#cp": chk.SequenceNumberKey, "#owner": chk.LeaseOwnerKey},
		ExpressionAttributeValues: map[string]dtypes.AttributeValue{
			":cp": &dtypes.AttributeValueMemberS{Value: shard.GetCheckpoint()},
			":me": &dtypes.AttributeValueMemberS{Value: s.workerID},
		},
	})
	if awserr.IsConditionFailed(err) {
		return fmt.Errorf("%w (shard %s)", errLeaseLost, shard.ID)
	}
	if err != nil {
		return fmt.Errorf("kinesis binding error: checkpoint of shard %s: %w", shard.ID, err)
	}
	return nil
}

// FetchCheckpoint loads the shard's checkpoint, owner and lease timeout. Like KCL's, it returns
// chk.ErrSequenceIDNotFound when the shard has no checkpoint; unlike KCL's it still loads the owner
// and lease timeout then, which a steal claim's condition needs. A lease another worker still holds
// is loaded from the last scan: KCL fetches every shard it does not hold at every shard sync.
func (s *leaseStore) FetchCheckpoint(shard *par.ShardStatus) error {
	if s.stopping() {
		return errConsumerStopping
	}
	if l, ok := s.liveForeignLease(shard.ID); ok {
		s.setOwner(shard, l.owner)
		shard.SetLeaseTimeout(l.timeout)
		if l.checkpoint == "" {
			return chk.ErrSequenceIDNotFound
		}
		shard.SetCheckpoint(l.checkpoint)
		return nil
	}
	return s.fetchFresh(shard)
}

// fetchFresh is FetchCheckpoint from the table.
func (s *leaseStore) fetchFresh(shard *par.ShardStatus) error {
	item, err := s.getItem(s.abortCtx, shard.ID)
	if err != nil {
		return err
	}
	if owner, ok := attrString(item, chk.LeaseOwnerKey); ok {
		s.setOwner(shard, owner)
	}
	if lt, ok := attrString(item, chk.LeaseTimeoutKey); ok && lt != "" {
		t, err := time.Parse(time.RFC3339Nano, lt)
		if err != nil {
			return fmt.Errorf("kinesis binding error: lease timeout of shard %s: %w", shard.ID, err)
		}
		shard.SetLeaseTimeout(t)
	}
	cp, ok := attrString(item, chk.SequenceNumberKey)
	if !ok || cp == "" {
		return chk.ErrSequenceIDNotFound
	}
	shard.SetCheckpoint(cp)
	return nil
}

// RemoveLeaseInfo deletes the item of a shard that no longer exists.
func (s *leaseStore) RemoveLeaseInfo(shardID string) error {
	return s.kclStore.RemoveLeaseInfo(shardID)
}

// RemoveLeaseOwner releases this worker's lease (KCL calls it when a shard consumer ends).
func (s *leaseStore) RemoveLeaseOwner(shardID string) error {
	err := s.kclStore.RemoveLeaseOwner(shardID)
	if err == nil || awserr.IsConditionFailed(err) {
		s.forget(shardID)
	}
	return err
}

func (s *leaseStore) GetLeaseOwner(shardID string) (string, error) {
	return s.kclStore.GetLeaseOwner(shardID)
}

// ListActiveWorkers maps each worker to the unfinished shards it holds or has a live steal claim on,
// reading the table at most every scanEvery. The shards this worker holds keep their local state: it
// is fresher than a scan.
func (s *leaseStore) ListActiveWorkers(shards map[string]*par.ShardStatus) (map[string][]*par.ShardStatus, error) {
	if s.stopping() {
		return nil, errConsumerStopping
	}
	if time.Since(s.lastScan) >= s.scanEvery {
		if err := s.refresh(shards); err != nil {
			return nil, err
		}
	}
	claimants := s.liveClaimants()
	workers := map[string][]*par.ShardStatus{}
	for _, shard := range shards {
		if shard.GetCheckpoint() == chk.ShardEnd {
			continue
		}
		owner := shard.GetLeaseOwner()
		if claimant, ok := claimants[shard.ID]; ok {
			owner = claimant
		}
		if owner == "" {
			// KCL balances only once every shard is taken.
			return nil, chk.ErrShardNotAssigned
		}
		workers[owner] = append(workers[owner], shard)
	}
	return workers, nil
}

// refresh scans the lease table into the shards' status and the live steal claims.
func (s *leaseStore) refresh(shards map[string]*par.ShardStatus) error {
	began := time.Now()
	items, err := s.scan(s.abortCtx)
	if err != nil {
		return err
	}
	s.lastScan = began
	claimants := map[string]string{}
	foreign := map[string]foreignLease{}
	for _, item := range items {
		id, _ := attrString(item, chk.LeaseKeyKey)
		if claimant := s.liveClaim(item, began); claimant != "" {
			claimants[id] = claimant
		}
		if l, ok := s.foreignLeaseOf(item); ok {
			foreign[id] = l
		}
		shard, ok := shards[id]
		if !ok || shard.GetLeaseOwner() == s.workerID {
			continue
		}
		owner, _ := attrString(item, chk.LeaseOwnerKey)
		s.setOwner(shard, owner)
		if cp, ok := attrString(item, chk.SequenceNumberKey); ok && cp != "" {
			shard.SetCheckpoint(cp)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claimants = claimants
	s.foreign = foreign
	for id, at := range s.claimed {
		// A claim placed before the scan that the table no longer shows was taken over or stomped on.
		if at.Before(began) && claimants[id] != s.workerID {
			delete(s.claimed, id)
		}
	}
	return nil
}

// liveClaimants maps each shard with a live steal claim to its claimant: the claims of the last scan
// and, fresher, this worker's own.
func (s *leaseStore) liveClaimants() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	claimants := make(map[string]string, len(s.claimants)+len(s.claimed))
	for id, claimant := range s.claimants {
		claimants[id] = claimant
	}
	for id := range s.claimed {
		claimants[id] = s.workerID
	}
	return claimants
}

// foreignLeaseOf returns the item's lease when another worker holds it.
func (s *leaseStore) foreignLeaseOf(item map[string]dtypes.AttributeValue) (foreignLease, bool) {
	owner, _ := attrString(item, chk.LeaseOwnerKey)
	lt, _ := attrString(item, chk.LeaseTimeoutKey)
	timeout, err := time.Parse(time.RFC3339Nano, lt)
	if owner == "" || owner == s.workerID || err != nil {
		return foreignLease{}, false
	}
	cp, _ := attrString(item, chk.SequenceNumberKey)
	return foreignLease{owner: owner, checkpoint: cp, timeout: timeout}, true
}

// liveClaim returns the worker whose steal claim is on the lease, unless the claim has expired by
// KCL's rule: claimTimeout after the lease's timeout.
func (s *leaseStore) liveClaim(item map[string]dtypes.AttributeValue, now time.Time) string {
	claimant, _ := attrString(item, chk.ClaimRequestKey)
	if claimant == "" {
		return ""
	}
	if lt, ok := attrString(item, chk.LeaseTimeoutKey); ok {
		if t, err := time.Parse(time.RFC3339Nano, lt); err == nil && t.Add(s.claimTimeout).Before(now) {
			return ""
		}
	}
	return claimant
}

// setOwner records the owner read from the table in the shard's status. A lease the table gives
// to this worker while no shard consumer of this worker holds it (the consumer ended and could not
// release it, say during a DynamoDB outage) is recorded as free: KCL's event loop skips the shards
// it believes it owns, so it would never read that shard again. Taking it back succeeds at once, the
// table naming this worker.
func (s *leaseStore) setOwner(shard *par.ShardStatus, owner string) {
	if owner == s.workerID && shard.GetLeaseOwner() != s.workerID {
		owner = ""
	}
	shard.SetLeaseOwner(owner)
}

// ClaimShard asks the shard's owner to hand it over (lease stealing). It is KCL's conditional write,
// reading shard status under its lock.
func (s *leaseStore) ClaimShard(shard *par.ShardStatus, claimID string) error {
	if s.stopping() {
		return errConsumerStopping
	}
	if err := s.fetchFresh(shard); err != nil && !errors.Is(err, chk.ErrSequenceIDNotFound) {
		return err
	}
	leaseTimeout := shard.GetLeaseTimeout().UTC().Format(time.RFC3339Nano)
	cond := "ShardID = :id AND LeaseTimeout = :lease_timeout AND attribute_not_exists(ClaimRequest)"
	values := map[string]dtypes.AttributeValue{
		":id":            &dtypes.AttributeValueMemberS{Value: shard.ID},
		":lease_timeout": &dtypes.AttributeValueMemberS{Value: leaseTimeout},
	}
	item := map[string]dtypes.AttributeValue{
		chk.LeaseKeyKey:     &dtypes.AttributeValueMemberS{Value: shard.ID},
		chk.LeaseTimeoutKey: &dtypes.AttributeValueMemberS{Value: leaseTimeout},
		chk.ClaimRequestKey: &dtypes.AttributeValueMemberS{Value: claimID},
	}
	if owner := shard.GetLeaseOwner(); owner == "" {
		cond += " AND attribute_not_exists(AssignedTo)"
	} else {
		item[chk.LeaseOwnerKey] = &dtypes.AttributeValueMemberS{Value: owner}
		cond += " AND AssignedTo = :assigned_to"
		values[":assigned_to"] = &dtypes.AttributeValueMemberS{Value: owner}
	}
	switch cp := shard.GetCheckpoint(); cp {
	case "":
		cond += " AND attribute_not_exists(Checkpoint)"
	case chk.ShardEnd:
		// A finished shard is not worth stealing; KCL's condition, kept as is.
		item[chk.SequenceNumberKey] = &dtypes.AttributeValueMemberS{Value: cp}
		cond += " AND Checkpoint <> :checkpoint"
		values[":checkpoint"] = &dtypes.AttributeValueMemberS{Value: cp}
	default:
		item[chk.SequenceNumberKey] = &dtypes.AttributeValueMemberS{Value: cp}
		cond += " AND Checkpoint = :checkpoint"
		values[":checkpoint"] = &dtypes.AttributeValueMemberS{Value: cp}
	}
	if shard.ParentShardId == "" {
		cond += " AND attribute_not_exists(ParentShardId)"
	} else {
		item[chk.ParentShardIdKey] = &dtypes.AttributeValueMemberS{Value: shard.ParentShardId}
		cond += " AND ParentShardId = :parent_shard"
		values[":parent_shard"] = &dtypes.AttributeValueMemberS{Value: shard.ParentShardId}
	}
	_, err := s.db.PutItem(s.abortCtx, &dynamodb.PutItemInput{
		TableName:                 aws.String(s.table),
		Item:                      item,
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeValues: values,
	})
	if err == nil && claimID == s.workerID {
		s.mu.Lock()
		s.claimed[shard.ID] = time.Now()
		s.mu.Unlock()
	}
	return err
}

// holds reports whether this worker owns the shard's lease in the table.
func (s *leaseStore) holds(ctx context.Context, shardID string) (bool, error) {
	item, err := s.getItem(ctx, shardID)
	if err != nil {
		return false, err
	}
	owner, _ := attrString(item, chk.LeaseOwnerKey)
	return owner == s.workerID, nil
}

// awaitParents waits until each parent of the shard (both, after a merge) is finished: its checkpoint
// is SHARD_END, or it has left the stream. A parent without a checkpoint that is still in the stream
// is waited for too: some worker takes its lease and reads it.
func (s *leaseStore) awaitParents(ctx context.Context, shardID string) error {
	parents, err := s.lineage.parentsOf(ctx, shardID)
	if err != nil {
		return err
	}
	for _, parent := range parents {
		if err := s.awaitShardEnd(ctx, parent, shardID); err != nil {
			return err
		}
	}
	return nil
}

func (s *leaseStore) awaitShardEnd(ctx context.Context, parent, child string) error {
	log := s.log.WithFields(map[string]any{readShardID: child, "parentShardId": parent})
	waiting := false
	for {
		finished, err := s.shardFinished(ctx, parent)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case err != nil:
			log.Warnf("Could not read the parent shard's checkpoint, trying again: %v", err)
		case finished:
			if waiting {
				log.Infof("Parent shard finished, reading the child")
			}
			return nil
		case !waiting:
			log.Infof("Waiting until the parent shard has been read to its end")
			waiting = true
		}
		if !backoff.Sleep(ctx, s.parentPoll) {
			return ctx.Err()
		}
	}
}

func (s *leaseStore) shardFinished(ctx context.Context, shardID string) (bool, error) {
	item, err := s.getItem(ctx, shardID)
	if err != nil {
		return false, err
	}
	if cp, ok := attrString(item, chk.SequenceNumberKey); ok && cp != "" {
		return cp == chk.ShardEnd, nil
	}
	listed, err := s.lineage.stillListed(ctx, shardID)
	if err != nil {
		return false, err
	}
	return !listed, nil
}

// release gives up every lease this worker still holds, so that another replica can take the shards
// at its next shard sync rather than after the lease duration, and withdraws its pending steal
// claims: other workers may not take a claimed shard until the claim expires.
func (s *leaseStore) release(ctx context.Context) error {
	s.mu.Lock()
	var jobs []func() error
	for id := range s.held {
		jobs = append(jobs, func() error { return s.removeMine(ctx, id, chk.LeaseOwnerKey, "lease") })
	}
	for id := range s.claimed {
		jobs = append(jobs, func() error { return s.removeMine(ctx, id, chk.ClaimRequestKey, "steal claim") })
	}
	s.mu.Unlock()

	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, job := range jobs {
		wg.Go(func() { errs[i] = job() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// removeMine removes the attribute (owner or claim) from the shard's lease if it names this worker.
func (s *leaseStore) removeMine(ctx context.Context, shardID, attr, what string) error {
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      shardKey(shardID),
		UpdateExpression:         aws.String("REMOVE #attr"),
		ConditionExpression:      aws.String("#attr = :me"),
		ExpressionAttributeNames: map[string]string{"#attr": attr},
		ExpressionAttributeValues: map[string]dtypes.AttributeValue{
			":me": &dtypes.AttributeValueMemberS{Value: s.workerID},
		},
	})
	if err != nil && !awserr.IsConditionFailed(err) {
		return fmt.Errorf("kinesis binding error: releasing the %s of shard %s: %w", what, shardID, err)
	}
	s.mu.Lock()
	if attr == chk.LeaseOwnerKey {
		delete(s.held, shardID)
	} else {
		delete(s.claimed, shardID)
	}
	s.mu.Unlock()
	return nil
}

func (s *leaseStore) forget(shardID string) {
	s.mu.Lock()
	delete(s.held, shardID)
	s.mu.Unlock()
}

func (s *leaseStore) getItem(ctx context.Context, shardID string) (map[string]dtypes.AttributeValue, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            shardKey(shardID),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("kinesis binding error: reading the lease of shard %s: %w", shardID, err)
	}
	return out.Item, nil
}

// scan reads every lease: shard, owner, checkpoint, steal claim and lease timeout.
func (s *leaseStore) scan(ctx context.Context) ([]map[string]dtypes.AttributeValue, error) {
	return scanLeases(ctx, s.db, s.table)
}

func scanLeases(ctx context.Context, db *dynamodb.Client, table string) ([]map[string]dtypes.AttributeValue, error) {
	var items []map[string]dtypes.AttributeValue
	in := &dynamodb.ScanInput{
		TableName:            aws.String(table),
		ConsistentRead:       aws.Bool(true),
		ProjectionExpression: aws.String("#id, #owner, #cp, #claim, #timeout"),
		ExpressionAttributeNames: map[string]string{
			"#id": chk.LeaseKeyKey, "#owner": chk.LeaseOwnerKey, "#cp": chk.SequenceNumberKey,
			"#claim": chk.ClaimRequestKey, "#timeout": chk.LeaseTimeoutKey,
		},
	}
	for {
		out, err := db.Scan(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("kinesis binding error: scanning lease table %s: %w", table, err)
		}
		items = append(items, out.Items...)
		if len(out.LastEvaluatedKey) == 0 {
			return items, nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// ensureLeaseTable creates the lease table when it is missing, with on-demand billing, and waits
// until it is ACTIVE: KCL would create it with provisioned capacity and use it while still CREATING.
// Replicas starting together may race to create it; the loser waits like the winner.
func ensureLeaseTable(ctx context.Context, db *dynamodb.Client, table string, log logger.Logger) error {
	if _, hasDeadline := ctx.Deadline(); !hasDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, tableCreateTimeout)
		defer cancel()
	}
	status, err := tableStatus(ctx, db, table)
	if err != nil {
		return err
	}
	if status == "" {
		_, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
			TableName:            aws.String(table),
			BillingMode:          dtypes.BillingModePayPerRequest,
			AttributeDefinitions: []dtypes.AttributeDefinition{{AttributeName: aws.String(chk.LeaseKeyKey), AttributeType: dtypes.ScalarAttributeTypeS}},
			KeySchema:            []dtypes.KeySchemaElement{{AttributeName: aws.String(chk.LeaseKeyKey), KeyType: dtypes.KeyTypeHash}},
		})
		var inUse *dtypes.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) {
			return fmt.Errorf("kinesis binding error: creating lease table %s: %w", table, awserr.Classify(err))
		}
		if err == nil {
			log.Infof("Created lease table %s (on-demand billing)", table)
		}
	}
	wait := tableActivePollFirst
	for status != dtypes.TableStatusActive {
		if !backoff.Sleep(ctx, wait) {
			return fmt.Errorf("kinesis binding error: lease table %s not ACTIVE (%s): %w", table, status, ctx.Err())
		}
		wait = min(2*wait, tableActivePollMax)
		if status, err = tableStatus(ctx, db, table); err != nil {
			return err
		}
	}
	return nil
}

// tableStatus returns the table's status, or "" when it does not exist.
func tableStatus(ctx context.Context, db *dynamodb.Client, table string) (dtypes.TableStatus, error) {
	out, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
	var notFound *dtypes.ResourceNotFoundException
	if errors.As(err, &notFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("kinesis binding error: describing lease table %s: %w", table, awserr.Classify(err))
	}
	return out.Table.TableStatus, nil
}

func shardKey(shardID string) map[string]dtypes.AttributeValue {
	return map[string]dtypes.AttributeValue{chk.LeaseKeyKey: &dtypes.AttributeValueMemberS{Value: shardID}}
}

func attrString(item map[string]dtypes.AttributeValue, key string) (string, bool) {
	v, ok := item[key].(*dtypes.AttributeValueMemberS)
	if !ok {
		return "", false
	}
	return v.Value, true
}
