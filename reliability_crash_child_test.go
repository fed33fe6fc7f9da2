package kinesis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"
)

// The child processes of the crash tests: the test binary started again with crashChildEnv set,
// which TestMain hands to runCrashChild instead of running tests. A child speaks to its parent
// in lines on stdout that start with "@@"; everything else (logs) goes to stderr.

const (
	crashChildEnv   = "KINESIS_CRASH_CHILD"   // "consumer" or "producer"
	crashPropsEnv   = "KINESIS_CRASH_PROPS"   // the component metadata, as JSON
	crashPrefixEnv  = "KINESIS_CRASH_PREFIX"  // producer: the records' prefix
	crashCallersEnv = "KINESIS_CRASH_CALLERS" // producer: concurrent callers

	// crashChildLifetime stops a child whose parent forgot it; Pdeathsig covers a parent that died.
	crashChildLifetime = 3 * time.Minute
)

func runCrashChild(mode string) int {
	log := logger.NewLogger("crash-child")
	log.SetOutput(os.Stderr)
	var props map[string]string
	if err := json.Unmarshal([]byte(os.Getenv(crashPropsEnv)), &props); err != nil {
		fmt.Fprintln(os.Stderr, "crash child: props:", err)
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	ctx, cancelLife := context.WithTimeout(ctx, crashChildLifetime)
	defer cancelLife()

	b := NewAWSKinesis(log).(*AWSKinesis)
	if props["mode"] == string(modeExtended) {
		b.sdkHTTPClient = newFanoutFixClient() // kinesis-local's missing initial-response, as in every extended test
	}
	if err := b.Init(ctx, bindings.Metadata{Base: metadata.Base{Properties: props}}); err != nil {
		fmt.Fprintln(os.Stderr, "crash child: init:", err)
		return 2
	}
	var err error
	switch mode {
	case "consumer":
		err = runConsumerChild(ctx, b)
	case "slow-consumer":
		err = runSlowConsumerChild(ctx, b)
	case "producer":
		err = runProducerChild(ctx, b)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	err = errors.Join(err, b.Close())
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 1
	}
	return 0
}

// childOut writes whole protocol lines; one write per line keeps lines intact on the pipe.
var childOut sync.Mutex

func sayf(format string, args ...any) {
	line := fmt.Sprintf("@@"+format+"\n", args...)
	childOut.Lock()
	defer childOut.Unlock()
	_, _ = os.Stdout.WriteString(line)
}

// runConsumerChild reads until told to stop, reporting each record before acknowledging it: a
// record reported but not yet checkpointed when the process dies is delivered again elsewhere.
func runConsumerChild(ctx context.Context, b bindings.InputOutputBinding) error {
	return readUntilStopped(ctx, b, func(_ context.Context, resp *bindings.ReadResponse) ([]byte, error) {
		sayf("R %s", resp.Data)
		return nil, nil
	})
}

// runSlowConsumerChild reads with a handler that takes 0-20 ms per record, and 1.5 s for every 50th
// record of a lane, so that with concurrencyPerShard above 1 calls complete out of order and an old
// record is in flight whenever a checkpoint is written; it reports each record, with its shard and
// sequence number, before acknowledging it.
func runSlowConsumerChild(ctx context.Context, b bindings.InputOutputBinding) error {
	return readUntilStopped(ctx, b, func(_ context.Context, resp *bindings.ReadResponse) ([]byte, error) {
		hold := time.Duration(rand.IntN(20)) * time.Millisecond
		if _, _, i, ok := parseLaneRecord(string(resp.Data)); ok && i%50 == 7 {
			hold = 1500 * time.Millisecond
		}
		time.Sleep(hold)
		sayf("R %s %s %s", resp.Data, resp.Metadata["shardId"], resp.Metadata["sequenceNumber"])
		return nil, nil
	})
}

// readUntilStopped starts reading with handler, says READY, and returns once told to stop.
func readUntilStopped(ctx context.Context, b bindings.InputOutputBinding, handler bindings.Handler) error {
	if err := b.Read(ctx, handler); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	sayf("READY")
	<-ctx.Done()
	return nil
}

// runProducerChild creates records from concurrent callers until killed, reporting each record
// before it is sent ("TRY") and each success with where the record landed ("OK").
func runProducerChild(ctx context.Context, b bindings.InputOutputBinding) error {
	prefix := os.Getenv(crashPrefixEnv)
	callers, err := strconv.Atoi(os.Getenv(crashCallersEnv))
	if err != nil {
		return fmt.Errorf("callers: %w", err)
	}
	sayf("READY")
	var wg sync.WaitGroup
	for lane := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				data := laneRecord(prefix, lane, i)
				sayf("TRY %s", data)
				resp, err := b.Invoke(ctx, &bindings.InvokeRequest{
					Operation: bindings.CreateOperation, Data: []byte(data),
					Metadata: map[string]string{reqPartitionKey: laneKey(lane)},
				})
				if err == nil {
					sayf("OK %s %s %s", data, resp.Metadata[respShardID], resp.Metadata[respSequenceNumber])
				}
			}
		}()
	}
	wg.Wait()
	return nil
}
