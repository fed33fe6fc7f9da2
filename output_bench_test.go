package kinesis

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr/components-contrib/bindings"
)

// BenchmarkCreate measures create with 1 and 64 concurrent callers putting 1 KiB records on
// kinesis-local, each case on a fresh 4-shard stream (the emulator slows down as a stream fills):
//
//	go test -run '^$' -bench BenchmarkCreate -benchtime 2000x .
func BenchmarkCreate(b *testing.B) {
	data := bytes.Repeat([]byte("k"), 1024)
	for _, callers := range []int{1, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			binding := newBinding(b, localProps(b, localaws.NewStream(b, 4)))
			ctx := b.Context()
			req := func() *bindings.InvokeRequest {
				return &bindings.InvokeRequest{Operation: bindings.CreateOperation, Data: data}
			}
			_, err := binding.Invoke(ctx, req()) // reads the stream's record size limit once
			require.NoError(b, err)

			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, callers)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range callers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if _, err := binding.Invoke(ctx, req()); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
		})
	}
}
