package kinesis

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

// putLease writes a shard's whole lease item; claim "" writes none.
func putLease(t *testing.T, s *leaseStore, shardID, owner, claim string, timeout time.Time) {
	t.Helper()
	item := map[string]dtypes.AttributeValue{
		chk.LeaseKeyKey:       &dtypes.AttributeValueMemberS{Value: shardID},
		chk.LeaseOwnerKey:     &dtypes.AttributeValueMemberS{Value: owner},
		chk.LeaseTimeoutKey:   &dtypes.AttributeValueMemberS{Value: timeout.UTC().Format(time.RFC3339Nano)},
		chk.SequenceNumberKey: &dtypes.AttributeValueMemberS{Value: "49000000000000000000000000000000000000000000000000000001"},
	}
	if claim != "" {
		item[chk.ClaimRequestKey] = &dtypes.AttributeValueMemberS{Value: claim}
	}
	_, err := s.db.PutItem(t.Context(), &dynamodb.PutItemInput{TableName: aws.String(s.table), Item: item})
	require.NoError(t, err)
}

// balance returns how many shards ListActiveWorkers gives each worker, as KCL's rebalance sees them.
func balance(t *testing.T, s *leaseStore, shards map[string]*par.ShardStatus, rescan bool) map[string]int {
	t.Helper()
	if rescan {
		s.lastScan = time.Time{}
	}
	workers, err := s.ListActiveWorkers(shards)
	require.NoError(t, err)
	counts := map[string]int{}
	for w, owned := range workers {
		counts[w] = len(owned)
	}
	return counts
}

// A worker that placed a steal claim must count the shard as its own until the handover: otherwise
// it claims another shard at every shard sync until the first handover lands, and replicas that join
// together strip the first one of every shard and then steal them back, round after round.
func TestBalancingCountsPendingStealClaimsForTheClaimant(t *testing.T) {
	t.Parallel()
	r2 := newDynaliteLeaseStore(t, "r2", "")
	r3 := newDynaliteLeaseStore(t, "r3", r2.table)
	statuses := func() map[string]*par.ShardStatus {
		m := map[string]*par.ShardStatus{}
		for i := range 4 {
			id := fmt.Sprintf("shardId-%012d", i)
			m[id] = &par.ShardStatus{ID: id, Mux: &sync.RWMutex{}}
		}
		return m
	}
	r2Shards, r3Shards := statuses(), statuses()
	leaseEnd := time.Now().Add(time.Hour)
	for id := range r2Shards {
		putLease(t, r2, id, "r1", "", leaseEnd)
	}
	assert.Equal(t, map[string]int{"r1": 4}, balance(t, r2, r2Shards, true))

	// r2's own claim counts for r2 at once, before any scan could show it.
	require.NoError(t, r2.ClaimShard(r2Shards["shardId-000000000000"], "r2"))
	assert.Equal(t, map[string]int{"r1": 3, "r2": 1}, balance(t, r2, r2Shards, false))

	// Another worker's claim counts for it once a scan shows it.
	balance(t, r3, r3Shards, true) // r3 learns the owners, as KCL's first sync would
	require.NoError(t, r3.ClaimShard(r3Shards["shardId-000000000001"], "r3"))
	assert.Equal(t, map[string]int{"r1": 2, "r2": 1, "r3": 1}, balance(t, r2, r2Shards, true))

	// A claim past KCL's claim timeout holds nothing.
	putLease(t, r2, "shardId-000000000002", "r1", "r4", time.Now().Add(-2*r2.claimTimeout))
	assert.Equal(t, map[string]int{"r1": 2, "r2": 1, "r3": 1}, balance(t, r2, r2Shards, true))

	// A claim of r2's that the table no longer shows (its owner's lease write stomped on it) is
	// forgotten at the next scan.
	putLease(t, r2, "shardId-000000000000", "r1", "", leaseEnd)
	assert.Equal(t, map[string]int{"r1": 3, "r3": 1}, balance(t, r2, r2Shards, true))
}

// opCounter counts the AWS operations a binding calls, by name, and forwards them.
type opCounter struct {
	next  *http.Client
	mu    sync.Mutex
	calls map[string]int
}

func newOpCounter() *opCounter { return &opCounter{next: &http.Client{}, calls: map[string]int{}} }

func (c *opCounter) Do(req *http.Request) (*http.Response, error) {
	op := req.Header.Get("X-Amz-Target")
	op = op[strings.LastIndexByte(op, '.')+1:]
	c.mu.Lock()
	c.calls[op]++
	c.mu.Unlock()
	return c.next.Do(req)
}

func (c *opCounter) count(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[op]
}

// Replicas that share a stream must not read, at every shard sync, the leases the others hold:
// KCL does, twice per shard per tick, which on AWS is paid for (strongly consistent reads) and grows
// with shards times replicas. Once the shards are split, a replica's lease reads are its renewals.
func TestSharedReplicasDoNotReadLeasesHeldByOthersAtEveryShardSync(t *testing.T) {
	t.Parallel()
	stream := localaws.NewStream(t, 8)
	consumer := localaws.UniqueName("reads")
	const lease = 3 * time.Second
	counter := newOpCounter()
	props := func(worker string) map[string]string {
		return shProps(t, stream, consumer, "workerID", worker, "leaseDuration", lease.String())
	}
	shStart(t, props("counted"), (&shRecorder{}).handler("counted"), func(b *AWSKinesis) { b.sdkHTTPClient = counter })
	shStart(t, props("other"), (&shRecorder{}).handler("other"))
	require.Eventually(t, func() bool {
		c := ownedBy(shOwners(t, consumer))
		return c["counted"] == 4 && c["other"] == 4
	}, 20*time.Second, 100*time.Millisecond, "the replicas split the shards 4/4")

	time.Sleep(time.Second) // the last handover's own reads (fetch, first renewal) are not the steady state

	const window = 4 * time.Second
	before := counter.count("GetItem")
	time.Sleep(window)
	reads := counter.count("GetItem") - before
	renewals := int(4 * window / (lease / 3))
	t.Logf("%d lease reads in %v with 4 shards held and 4 held by the other replica (%d renewals)", reads, window, renewals)
	assert.LessOrEqual(t, reads, renewals+renewals/2, "lease reads beyond the renewals of the shards it holds")
	assert.Equal(t, map[string]int{"counted": 4, "other": 4}, ownedBy(shOwners(t, consumer)), "the split held")
}
