package kinesis_test

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

// onLocalEmulators points an example's metadata at the local emulators of this test binary (started
// on first use, stopped by TestMain), which is all that differs from running against AWS:
//
//   - the stream is created, with one shard, under a unique name derived from streamName, so that
//     runs never see each other's records;
//   - a lease table of its own (leaseTableName), so that a run never resumes from another's
//     checkpoints;
//   - the emulators' region and endpoints, and their static credentials (against AWS, leave
//     accessKey and secretKey out to use the default credential chain).
//
// It panics if the emulators cannot be had: an example has no test to fail.
func onLocalEmulators(props map[string]string) map[string]string {
	srv, err := localaws.Shared()
	if err != nil {
		panic(err)
	}
	stream := localaws.UniqueName(props["streamName"])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err = srv.CreateStream(ctx, srv.KinesisClient(), stream, 1); err != nil {
		panic(fmt.Errorf("example stream: %w", err))
	}
	local := maps.Clone(props)
	local["streamName"] = stream
	local["leaseTableName"] = localaws.UniqueName("example-leases")
	local["region"] = srv.Region
	local["endpoint"] = srv.KinesisEndpoint
	local["dynamoDBEndpoint"] = srv.DynamoDBEndpoint
	local["accessKey"] = localaws.AccessKeyID
	local["secretKey"] = localaws.SecretAccessKey
	return local
}
