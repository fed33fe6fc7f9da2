package kinesis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"

	"github.com/dapr-kinesis/kinesis"
)

// The output side without daprd: Init with the component's metadata, then create, whose response
// metadata says where the record went, then Close.
func Example() {
	ctx := context.Background()
	props := map[string]string{
		"streamName": "orders",
		"region":     "us-east-1",
	}
	props = onLocalEmulators(props) // only here: see example_env_test.go

	log := logger.NewLogger("orders")
	log.SetOutput(os.Stderr) // dapr's loggers write to stdout, where this example's output is checked
	b := kinesis.NewAWSKinesis(log)
	if err := b.Init(ctx, bindings.Metadata{Base: metadata.Base{Name: "orders", Properties: props}}); err != nil {
		fmt.Println("init:", err)
		return
	}

	resp, err := b.Invoke(ctx, &bindings.InvokeRequest{
		Operation: bindings.CreateOperation,
		Data:      []byte(`{"order": 42}`),
		Metadata:  map[string]string{"partitionKey": "customer-7"},
	})
	if err != nil {
		fmt.Println("create:", err)
		return
	}
	fmt.Println("shardId:", resp.Metadata["shardId"])
	fmt.Println("has a sequenceNumber:", resp.Metadata["sequenceNumber"] != "")

	// Close waits (up to 5 s) for creates still in flight to get their answer.
	if err := b.Close(); err != nil {
		fmt.Println("close:", err)
	}
	// Output:
	// shardId: shardId-000000000000
	// has a sequenceNumber: true
}

// bulkCreate writes many records in one call and answers for each entry, in request order: an
// entry that fails (here one without data) does not fail the others.
func Example_bulkCreate() {
	ctx := context.Background()
	props := map[string]string{
		"streamName": "orders",
		"region":     "us-east-1",
	}
	props = onLocalEmulators(props) // only here: see example_env_test.go

	log := logger.NewLogger("orders")
	log.SetOutput(os.Stderr) // dapr's loggers write to stdout, where this example's output is checked
	b := kinesis.NewAWSKinesis(log)
	if err := b.Init(ctx, bindings.Metadata{Base: metadata.Base{Name: "orders", Properties: props}}); err != nil {
		fmt.Println("init:", err)
		return
	}

	resp, err := b.Invoke(ctx, &bindings.InvokeRequest{
		Operation: "bulkCreate",
		Data: []byte(`[
			{"data": {"order": 1}, "partitionKey": "customer-1"},
			{"partitionKey": "customer-2"},
			{"data": "plain text", "partitionKey": "customer-3"}
		]`),
	})
	if err != nil {
		fmt.Println("bulkCreate:", err)
		return
	}
	fmt.Println("recordCount:", resp.Metadata["recordCount"], "failedRecordCount:", resp.Metadata["failedRecordCount"])
	var results []struct {
		ShardID        string `json:"shardId"`
		SequenceNumber string `json:"sequenceNumber"`
		ErrorCode      string `json:"errorCode"`
		ErrorMessage   string `json:"errorMessage"`
	}
	if err := json.Unmarshal(resp.Data, &results); err != nil {
		fmt.Println("results:", err)
		return
	}
	for i, r := range results {
		if r.ErrorCode != "" {
			fmt.Printf("%d: %s: %s\n", i, r.ErrorCode, r.ErrorMessage)
			continue
		}
		fmt.Printf("%d: written to %s\n", i, r.ShardID)
	}
	if err := b.Close(); err != nil {
		fmt.Println("close:", err)
	}
	// Output:
	// recordCount: 3 failedRecordCount: 1
	// 0: written to shardId-000000000000
	// 1: InvalidEntry: 'data' is required
	// 2: written to shardId-000000000000
}

// The input side without daprd: Read calls the handler for each record, one at a time per shard, and
// returns once the consumer runs. A handler that returns an error has the same record delivered
// again (after retryInitialInterval, doubling up to retryMaxInterval) before anything after it.
func Example_read() {
	ctx := context.Background()
	props := map[string]string{
		"streamName":      "orders",
		"region":          "us-east-1",
		"consumerName":    "order-processor",
		"initialPosition": "TRIM_HORIZON", // this example puts its records before it reads
	}
	props = onLocalEmulators(props) // only here: see example_env_test.go

	// One instance serves either side; daprd creates one per direction.
	log := logger.NewLogger("orders")
	log.SetOutput(os.Stderr) // dapr's loggers write to stdout, where this example's output is checked
	b := kinesis.NewAWSKinesis(log)
	if err := b.Init(ctx, bindings.Metadata{Base: metadata.Base{Name: "orders", Properties: props}}); err != nil {
		fmt.Println("init:", err)
		return
	}
	for _, order := range []string{"order-1", "order-2"} {
		_, err := b.Invoke(ctx, &bindings.InvokeRequest{
			Operation: bindings.CreateOperation,
			Data:      []byte(order),
			Metadata:  map[string]string{"partitionKey": "customer-7"},
		})
		if err != nil {
			fmt.Println("create:", err)
			return
		}
	}

	var (
		mu         sync.Mutex
		deliveries = map[string]int{}
		done       = make(chan struct{})
	)
	handler := func(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		order := string(r.Data)
		deliveries[order]++
		fmt.Printf("%s (partitionKey %s), delivery %d\n", order, r.Metadata["partitionKey"], deliveries[order])
		if order == "order-1" && deliveries[order] == 1 {
			return nil, errors.New("not now") // not checkpointed: delivered again
		}
		if order == "order-2" && deliveries[order] == 1 {
			close(done)
		}
		return nil, nil
	}
	if err := b.Read(ctx, handler); err != nil {
		fmt.Println("read:", err)
		return
	}
	<-done

	// Close stops the consumer: the handler call in flight ends, the last record handled is
	// checkpointed and the shard's lease is given up for another replica to take.
	if err := b.Close(); err != nil {
		fmt.Println("close:", err)
	}
	// Output:
	// order-1 (partitionKey customer-7), delivery 1
	// order-1 (partitionKey customer-7), delivery 2
	// order-2 (partitionKey customer-7), delivery 1
}
