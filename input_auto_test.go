package kinesis

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/testwait"
	"github.com/dapr/components-contrib/bindings"
)

// keylessWatch is a handler that, as an app would, checks that each key's records arrive in order
// and counts how many records without a key are in the handler at once.
type keylessWatch struct {
	hold time.Duration

	mu            sync.Mutex
	keylessNow    int
	keylessPeak   int
	keylessSeen   map[string]int // data → deliveries
	keyedSeen     map[string]int
	keyedLast     map[string]int // shard and key → index of its last record
	violations    []string
	keyMismatches []string
}

func (w *keylessWatch) handle(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
	data := string(r.Data)
	key, hasKey := r.Metadata[readPartitionKey]
	w.mu.Lock()
	keyless := strings.HasPrefix(data, "keyless|")
	if keyless == hasKey {
		w.keyMismatches = append(w.keyMismatches, fmt.Sprintf("%s: partitionKey %q present %v", data, key, hasKey))
	}
	if keyless {
		w.keylessNow++
		w.keylessPeak = max(w.keylessPeak, w.keylessNow)
		w.keylessSeen[data]++
	} else {
		// The stream places records itself, so a key's records may be on several shards: their order
		// holds within each shard, where the put order is the sequence order.
		i, _ := strconv.Atoi(data[strings.LastIndexByte(data, '|')+1:])
		lane := r.Metadata[readShardID] + "/" + key
		if last, ok := w.keyedLast[lane]; ok && i <= last {
			w.violations = append(w.violations, fmt.Sprintf("%s after record %d of its key on its shard", data, last))
		}
		w.keyedLast[lane] = i
		w.keyedSeen[data]++
	}
	w.mu.Unlock()

	time.Sleep(w.hold)
	if keyless {
		w.mu.Lock()
		w.keylessNow--
		w.mu.Unlock()
	}
	return nil, nil
}

func (w *keylessWatch) done(keyless, keyed int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.keylessSeen) == keyless && len(w.keyedSeen) == keyed
}

// TestRecordsWithoutAKeyAreDeliveredConcurrentlyNextToKeyedOnes: on a stream that places records
// itself, records written without a partition key each run in a lane of their own (AWS promises no
// order among them), so concurrencyPerShard holds for them as for many keys; keyed records keep
// their key's order within a shard, and the read metadata of a keyless record has no partitionKey.
func TestRecordsWithoutAKeyAreDeliveredConcurrentlyNextToKeyedOnes(t *testing.T) {
	t.Parallel()
	tg := newAutoTarget(t, true)
	const keyless, keyedPerKey = 240, 30
	var entries []types.PutRecordsRequestEntry
	for i := range keyless {
		entries = append(entries, types.PutRecordsRequestEntry{Data: fmt.Appendf(nil, "keyless|%d", i)})
		if i < keyedPerKey*4 {
			key := "lane-" + strconv.Itoa(i%4)
			entries = append(entries, types.PutRecordsRequestEntry{Data: fmt.Appendf(nil, "keyed|%s|%d", key, i/4), PartitionKey: aws.String(key)})
		}
	}
	out, err := tg.client.PutRecords(t.Context(), &kinesis.PutRecordsInput{StreamName: aws.String(tg.stream), Records: entries})
	require.NoError(t, err)
	require.Zero(t, aws.ToInt32(out.FailedRecordCount))

	props := withConsumer(tg.props, modeShared)
	props["initialPosition"], props["concurrencyPerShard"] = "TRIM_HORIZON", "32"
	props["shardSyncInterval"], props["pollInterval"] = "200ms", "200ms"
	w := &keylessWatch{hold: 50 * time.Millisecond, keylessSeen: map[string]int{}, keyedSeen: map[string]int{}, keyedLast: map[string]int{}}
	b := newBinding(t, props)
	require.NoError(t, b.Read(t.Context(), w.handle))
	testwait.Eventually(t, func() bool { return w.done(keyless, 4*keyedPerKey) }, 60*time.Second, 20*time.Millisecond,
		"every record delivered")

	w.mu.Lock()
	defer w.mu.Unlock()
	assert.Empty(t, w.violations, "keyed records in their key's order on each shard")
	for data, n := range w.keyedSeen {
		assert.Equal(t, 1, n, data)
	}
	for data, n := range w.keylessSeen {
		assert.Equal(t, 1, n, data)
	}
	assert.Empty(t, w.keyMismatches, "partitionKey in the metadata exactly when the record has one")
	assert.Len(t, w.keylessSeen, keyless)
	// One lane for all keyless records would allow one call per shard (4); concurrencyPerShard
	// allows 32 per shard.
	assert.Greater(t, w.keylessPeak, 8, "keyless records in the handler at once")
	t.Logf("keyless records in the handler at once: up to %d", w.keylessPeak)
}
