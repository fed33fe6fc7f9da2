// Package shardlist lists every shard of a stream with ListShards, page after page: what the lease
// coordinator (shard lineage) and the producer's shard map (hash key ranges) both start from.
package shardlist

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// Lister is the part of the Kinesis client All uses.
type Lister interface {
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, optFns ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
}

// All returns the stream's shards, open and closed, in the order ListShards gives them. The error is
// the API's, unwrapped: callers say what they were listing for.
func All(ctx context.Context, api Lister, stream string) ([]types.Shard, error) {
	in := &kinesis.ListShardsInput{StreamName: aws.String(stream)}
	var shards []types.Shard
	for {
		out, err := api.ListShards(ctx, in)
		if err != nil {
			return nil, err //nolint:wrapcheck // documented: the caller wraps it
		}
		shards = append(shards, out.Shards...)
		if out.NextToken == nil {
			return shards, nil
		}
		// A request with NextToken must not name the stream: AWS rejects the pair.
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
}
