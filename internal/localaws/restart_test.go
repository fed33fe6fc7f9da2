package localaws

import (
	"context"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRestartKinesisKeepsDataAndPort: what a fault test relies on when it restarts the server
// under a running binding.
func TestRestartKinesisKeepsDataAndPort(t *testing.T) {
	t.Parallel()
	s, err := Start(t.Context(), Options{PersistDir: t.TempDir()})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Stop()) }()

	ctx := t.Context()
	client := s.KinesisClient()
	const stream = "restart"
	require.NoError(t, s.CreateStream(ctx, client, stream, 1))
	put, err := client.PutRecord(ctx, &kinesis.PutRecordInput{
		StreamName: aws.String(stream), PartitionKey: aws.String("k"), Data: []byte("kept"),
	})
	require.NoError(t, err)

	endpoint := s.KinesisEndpoint
	oldPid := s.kinesis.cmd.Process.Pid
	require.NoError(t, s.RestartKinesis(ctx))
	assert.Equal(t, endpoint, s.KinesisEndpoint, "same port")
	assert.NotEqual(t, oldPid, s.kinesis.cmd.Process.Pid, "a new process")
	requireGone(t, oldPid)

	// The record put just before the restart, with nothing between them, is kept.
	it, err := client.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
		StreamName: aws.String(stream), ShardId: put.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
	})
	require.NoError(t, err)
	got, err := client.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it.ShardIterator})
	require.NoError(t, err)
	require.Len(t, got.Records, 1)
	assert.Equal(t, "kept", string(got.Records[0].Data))
	assert.Equal(t, aws.ToString(put.SequenceNumber), aws.ToString(got.Records[0].SequenceNumber))

	// Sequence numbers keep growing after the restart, so consumers' checkpoints stay meaningful.
	after, err := client.PutRecord(ctx, &kinesis.PutRecordInput{
		StreamName: aws.String(stream), PartitionKey: aws.String("k"), Data: []byte("after"),
	})
	require.NoError(t, err)
	assert.Equal(t, 1, seqNum(t, after.SequenceNumber).Cmp(seqNum(t, put.SequenceNumber)))

	newPid := s.kinesis.cmd.Process.Pid
	require.NoError(t, s.Stop())
	requireGone(t, newPid)
	require.Error(t, s.RestartKinesis(ctx), "after Stop")
}

func TestRestartKinesisNeedsPersistDir(t *testing.T) {
	t.Parallel()
	err := (&Servers{}).RestartKinesis(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Options.PersistDir")
}

// seqNum parses a sequence number, a decimal string longer than an int64.
func seqNum(t *testing.T, s *string) *big.Int {
	t.Helper()
	v, ok := new(big.Int).SetString(aws.ToString(s), 10)
	require.True(t, ok, aws.ToString(s))
	return v
}

// TestWaitForWriteAfterSkipsWritesBeforeAndHalfWritten feeds waitForWriteAfter a writer like
// kinesis-local's: whole-file rewrites, one of them paused half-way.
func TestWaitForWriteAfterSkipsWritesBeforeAndHalfWritten(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), persistFile)
	require.NoError(t, os.WriteFile(path, []byte(`{"write":0}`), 0o600))
	time.Sleep(10 * time.Millisecond)
	began := time.Now()

	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(2 * persistSettle)
		// A slow write, stopped half-way for longer than the settle time.
		assert.NoError(t, os.WriteFile(path, []byte(`{"write":1,"pad":"`), 0o600))
		time.Sleep(2 * persistSettle)
		assert.NoError(t, os.WriteFile(path, []byte(`{"write":1,"pad":""}`), 0o600))
		time.Sleep(2 * persistSettle)
		assert.NoError(t, os.WriteFile(path, []byte(`{"write":2}`), 0o600))
	}()
	data, err := waitForWriteAfter(t.Context(), path, began)
	require.NoError(t, err)
	assert.JSONEq(t, `{"write":2}`, string(data), "the first complete write after the start may have begun before it")
	<-done

	ctx, cancel := context.WithTimeout(t.Context(), 3*persistSettle)
	defer cancel()
	_, err = waitForWriteAfter(ctx, path, time.Now())
	require.ErrorIs(t, err, context.DeadlineExceeded, "no write after the start")
}
