package kinesis

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr/components-contrib/bindings"
)

// BenchmarkReadLatency measures put-to-handler latency, from the start of a PutRecord to the
// handler call, in shared and extended mode on the same kinesis-local, and reports p50, p99 and the
// maximum. Each iteration puts one record; puts are spaced 20-70 ms apart at random, so that they
// fall anywhere in the consumer's read cycle. kinesis-local's fan-out sends one event per second,
// which dominates extended mode's figures here (AWS pushes records as they arrive, ~70 ms).
//
//	go test -run '^$' -bench ReadLatency -benchtime 300x .
//
// The "-cuts" cases reach Kinesis through a fault proxy that cuts every connection every 5 s (twice
// or three times in 300 iterations): the price of a dropped subscription or poll, resubscription
// included.
func BenchmarkReadLatency(b *testing.B) {
	for _, mode := range []consumerMode{modeShared, modeExtended} {
		b.Run(string(mode), func(b *testing.B) { benchReadLatency(b, mode, 0) })
	}
	for _, mode := range []consumerMode{modeShared, modeExtended} {
		b.Run(string(mode)+"-cuts", func(b *testing.B) { benchReadLatency(b, mode, 5*time.Second) })
	}
}

func benchReadLatency(b *testing.B, mode consumerMode, cutInterval time.Duration) {
	stream := localaws.NewStream(b, 1)
	props := withConsumer(localProps(b, stream), mode)
	var cuts func() int
	if cutInterval > 0 {
		proxy := newFaultProxy(b, localaws.Get(b).KinesisEndpoint)
		props["endpoint"] = proxy.URL()
		cuts = cutEvery(b, cutInterval, proxy)
		defer func() { b.ReportMetric(float64(cuts()), "cuts") }()
	}
	binding := newBinding(b, props, withFanoutFix(mode)...)

	var (
		mu        sync.Mutex
		latencies []time.Duration
		seen      = map[string]bool{}
		warm      = make(chan struct{}, 1)
		done      = make(chan struct{})
	)
	require.NoError(b, binding.Read(b.Context(), func(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
		now := time.Now()
		data := string(r.Data)
		if data == "warm-up" {
			select {
			case warm <- struct{}{}:
			default:
			}
			return nil, nil
		}
		ns, err := strconv.ParseInt(data, 10, 64)
		if err != nil {
			return nil, nil
		}
		mu.Lock()
		defer mu.Unlock()
		if !seen[data] {
			seen[data] = true
			latencies = append(latencies, now.Sub(time.Unix(0, ns)))
			if len(latencies) == b.N {
				close(done)
			}
		}
		return nil, nil
	}))

	client := localaws.Get(b).KinesisClient()
	put := func(data string) {
		_, err := client.PutRecord(b.Context(), &kinesis.PutRecordInput{
			StreamName: aws.String(stream), Data: []byte(data), PartitionKey: aws.String("latency"),
		})
		require.NoError(b, err)
	}
	// Until a record arrives the consumer is still taking its lease or subscribing.
	for warmed := false; !warmed; {
		put("warm-up")
		select {
		case <-warm:
			warmed = true
		case <-time.After(time.Second):
		}
	}

	b.ResetTimer()
	for range b.N {
		put(strconv.FormatInt(time.Now().UnixNano(), 10))
		time.Sleep(20*time.Millisecond + rand.N(50*time.Millisecond))
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatal("records not delivered within a minute")
	}
	b.StopTimer()

	mu.Lock()
	defer mu.Unlock()
	slices.Sort(latencies)
	at := func(q float64) float64 {
		return float64(latencies[min(int(q*float64(len(latencies))), len(latencies)-1)]) / float64(time.Millisecond)
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
	b.ReportMetric(at(1), "max-ms")
}
