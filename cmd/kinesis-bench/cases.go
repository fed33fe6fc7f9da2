package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/google/uuid"

	kb "github.com/dapr-kinesis/kinesis"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"
)

// mode is what one case measures.
type mode string

const (
	modeCreate     mode = "a" // this binding's create, one record per call
	modePutRecord  mode = "b" // one SDK PutRecord per call, as the upstream binding does
	modePutRecords mode = "c" // SDK PutRecords of 500 in a loop: what the server can take
	modeBulk       mode = "d" // this binding's bulkCreate of 500
)

const batchOf = 500

var modeNames = map[mode]string{
	modeCreate:     "(a) binding create",
	modePutRecord:  "(b) SDK PutRecord/call",
	modePutRecords: "(c) SDK PutRecords x500",
	modeBulk:       "(d) binding bulkCreate x500",
}

func (m mode) String() string { return modeNames[m] }

func parseModes(s string) ([]mode, error) {
	var out []mode
	for _, f := range strings.Split(s, ",") {
		m := mode(strings.TrimSpace(f))
		if _, ok := modeNames[m]; !ok {
			return nil, fmt.Errorf("unknown mode %q (a, b, c or d)", f)
		}
		out = append(out, m)
	}
	return out, nil
}

// target is one emulator: where the binding points and the SDK client for (b), (c) and streams.
type target struct {
	name     string
	endpoint string
	client   *kinesis.Client
	servers  *localaws.Servers
}

func newTarget(srv *localaws.Servers, name string) (*target, error) {
	switch name {
	case "kinesalite":
		return &target{name: name, endpoint: srv.KinesaliteEndpoint, client: srv.KinesaliteClient(), servers: srv}, nil
	case "kinesis-local":
		return &target{name: name, endpoint: srv.KinesisEndpoint, client: srv.KinesisClient(), servers: srv}, nil
	}
	return nil, fmt.Errorf("unknown server %q (kinesalite or kinesis-local)", name)
}

// call makes one call of the case and returns how many records it put. The binding's calls add the
// positions (shard/sequence number) their answers name to seen, to count the Kinesis records written.
type call func(ctx context.Context, seen map[string]struct{}) (int, error)

// warmUp exercises a fresh server for cfg.warmUp on a stream of its own, so that no case measures
// node's JIT compiling the server's code paths.
func warmUp(ctx context.Context, cfg *config, t *target) error {
	if cfg.warmUp <= 0 {
		return nil
	}
	stream := localaws.UniqueName("bench-warm-up")
	if err := t.servers.CreateStream(ctx, t.client, stream, cfg.shards); err != nil {
		return err
	}
	defer deleteStream(t, stream)
	data := bytes.Repeat([]byte("w"), cfg.recordSize)
	until := time.Now().Add(cfg.warmUp)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for i := 0; time.Now().Before(until); i++ {
				var err error
				if i%2 == 0 {
					_, err = t.client.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(stream), Data: data, PartitionKey: aws.String(uuid.NewString())})
				} else {
					entries := make([]types.PutRecordsRequestEntry, 50)
					for j := range entries {
						entries[j] = types.PutRecordsRequestEntry{Data: data, PartitionKey: aws.String(uuid.NewString())}
					}
					_, err = t.client.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func deleteStream(t *target, stream string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = t.client.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(stream)})
}

// runCase measures one mode with n callers on a stream of its own, deleted afterwards.
func runCase(ctx context.Context, cfg *config, t *target, m mode, n int, agg string) (result, error) {
	stream := localaws.UniqueName(fmt.Sprintf("bench-%s-%d", m, n))
	if err := t.servers.CreateStream(ctx, t.client, stream, cfg.shards); err != nil {
		return result{}, err
	}
	defer deleteStream(t, stream)

	newCall, closeFn, err := prepare(ctx, cfg, t, m, stream, agg)
	if err != nil {
		return result{}, err
	}
	defer closeFn()

	// One call first: the binding reads the stream's record size limit, connections open.
	warm := newCall()
	if _, err := warm(ctx, map[string]struct{}{}); err != nil {
		return result{}, fmt.Errorf("warm-up call: %w", err)
	}

	r := result{server: t.name, mode: m, callers: n, aggregation: agg}
	positions := map[string]struct{}{}
	runCtx, cancel := context.WithTimeout(ctx, cfg.duration+cfg.drain)
	defer cancel()
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	began := time.Now()
	stopAt := began.Add(cfg.duration)
	for range n {
		c := newCall()
		wg.Go(func() {
			var lat []time.Duration
			var records, errs, cut int
			var firstErr error
			seen := map[string]struct{}{}
			for time.Now().Before(stopAt) {
				t0 := time.Now()
				k, err := c(runCtx, seen)
				switch {
				case err == nil:
					lat = append(lat, time.Since(t0))
					records += k
				case runCtx.Err() != nil:
					cut++
				default:
					errs++
					if firstErr == nil {
						firstErr = err
					}
				}
			}
			mu.Lock()
			r.latencies = append(r.latencies, lat...)
			r.records += records
			r.errors += errs
			r.cut += cut
			if r.firstErr == nil {
				r.firstErr = firstErr
			}
			for p := range seen {
				positions[p] = struct{}{}
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	r.elapsed = time.Since(began)
	r.kinesisRecords = len(positions)
	return r, ctx.Err()
}

// prepare returns a constructor of per-caller calls for mode m, and what to close afterwards.
func prepare(ctx context.Context, cfg *config, t *target, m mode, stream, agg string) (func() call, func(), error) {
	data := bytes.Repeat([]byte("r"), cfg.recordSize)
	switch m {
	case modePutRecord:
		return func() call {
			return func(ctx context.Context, _ map[string]struct{}) (int, error) {
				_, err := t.client.PutRecord(ctx, &kinesis.PutRecordInput{
					StreamName: aws.String(stream), Data: data, PartitionKey: aws.String(uuid.NewString()),
				})
				return 1, err
			}
		}, func() {}, nil
	case modePutRecords:
		return func() call {
			return func(ctx context.Context, _ map[string]struct{}) (int, error) {
				entries := make([]types.PutRecordsRequestEntry, batchOf)
				for i := range entries {
					entries[i] = types.PutRecordsRequestEntry{Data: data, PartitionKey: aws.String(uuid.NewString())}
				}
				out, err := t.client.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
				if err != nil {
					return 0, err
				}
				return batchOf - int(aws.ToInt32(out.FailedRecordCount)), nil
			}
		}, func() {}, nil
	}

	b, err := newBinding(ctx, cfg, t, stream, agg)
	if err != nil {
		return nil, nil, err
	}
	closeFn := func() { _ = b.Close() }
	if m == modeCreate {
		return func() call {
			return func(ctx context.Context, seen map[string]struct{}) (int, error) {
				resp, err := b.Invoke(ctx, &bindings.InvokeRequest{Operation: bindings.CreateOperation, Data: data})
				if err != nil {
					return 1, err
				}
				seen[resp.Metadata["shardId"]+"/"+resp.Metadata["sequenceNumber"]] = struct{}{}
				return 1, nil
			}
		}, closeFn, nil
	}
	payload := bulkPayload(cfg.recordSize)
	return func() call {
		return func(ctx context.Context, seen map[string]struct{}) (int, error) {
			resp, err := b.Invoke(ctx, &bindings.InvokeRequest{Operation: "bulkCreate", Data: payload})
			if err != nil {
				return 0, err
			}
			var entries []struct {
				ShardID        string `json:"shardId"`
				SequenceNumber string `json:"sequenceNumber"`
			}
			if err := json.Unmarshal(resp.Data, &entries); err != nil {
				return 0, fmt.Errorf("bulkCreate response: %w", err)
			}
			for _, e := range entries {
				if e.SequenceNumber != "" {
					seen[e.ShardID+"/"+e.SequenceNumber] = struct{}{}
				}
			}
			failed, _ := strconv.Atoi(resp.Metadata["failedRecordCount"])
			if failed > 0 {
				return batchOf - failed, fmt.Errorf("%d of %d entries failed: %.300s", failed, batchOf, resp.Data)
			}
			return batchOf, nil
		}
	}, closeFn, nil
}

func newBinding(ctx context.Context, cfg *config, t *target, stream, agg string) (bindings.OutputBinding, error) {
	props := map[string]string{
		"streamName": stream,
		"region":     localaws.Region,
		"endpoint":   t.endpoint,
		"accessKey":  localaws.AccessKeyID,
		"secretKey":  localaws.SecretAccessKey,
	}
	if cfg.linger != "" {
		props["batchLinger"] = cfg.linger
	}
	if cfg.maxInFlight != "" {
		props["maxInFlightBatches"] = cfg.maxInFlight
	}
	if agg != "" && agg != "-" {
		props["aggregation"] = agg
	}
	log := logger.NewLogger("kinesis-bench")
	log.SetOutputLevel(logger.WarnLevel)
	b := kb.NewAWSKinesis(log)
	if err := b.Init(ctx, bindings.Metadata{Base: metadata.Base{Properties: props}}); err != nil {
		return nil, errors.Join(err, b.Close())
	}
	return b, nil
}

// bulkPayload is a bulkCreate array of 500 records whose data, a JSON string, is size bytes with
// its quotes; partition keys are left to the binding (random), as in the other modes.
func bulkPayload(size int) []byte {
	entry := `{"data":"` + strings.Repeat("r", max(size-2, 0)) + `"}`
	return []byte("[" + strings.TrimSuffix(strings.Repeat(entry+",", batchOf), ",") + "]")
}
