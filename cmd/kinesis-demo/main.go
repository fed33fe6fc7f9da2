// Command kinesis-demo is the first thing to run: it drives the bindings.aws.kinesis component the
// way daprd does, against a component file of yours or, without one, against local emulators it
// starts itself.
//
//	kinesis-demo roundtrip                 # local emulators: send records, read them back, exit 0
//	kinesis-demo send [-f component.yaml] [-n 5] [-key k] [data]
//	kinesis-demo read [-f component.yaml] [-for 30s]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"

	kinesisbinding "github.com/dapr-kinesis/kinesis"
	"github.com/dapr-kinesis/kinesis/internal/localaws"
)

const usage = `usage:
  kinesis-demo roundtrip [-n 10]
      start local Kinesis and DynamoDB emulators, send records through the output binding,
      read them back through the input binding (shared mode), and exit 0 when all arrived
  kinesis-demo send [-f component.yaml] [-n 1] [-key partitionKey] [data]
      put records through Invoke("create") and print each shardId and sequenceNumber
  kinesis-demo read [-f component.yaml] [-for 0]
      run the input binding and print each record with its metadata (Ctrl-C to stop)

Without -f, send and read start the local emulators and use a fresh stream.`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "roundtrip":
		err = runRoundtrip(ctx, args)
	case "send":
		err = runSend(ctx, args)
	case "read":
		err = runRead(ctx, args)
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kinesis-demo:", err)
		os.Exit(1)
	}
}

// target is where the demo's bindings point: a component file, or a stream on local emulators.
type target struct {
	props map[string]string
	srv   *localaws.Servers // nil with a component file
}

func (t *target) close() {
	if t.srv != nil {
		if err := t.srv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "kinesis-demo: stopping emulators:", err)
		}
	}
}

// resolveTarget loads the component file or, without one, starts the emulators and a stream.
func resolveTarget(ctx context.Context, file string) (*target, error) {
	if file != "" {
		props, err := loadComponent(file)
		if err != nil {
			return nil, err
		}
		return &target{props: props}, nil
	}
	fmt.Println("starting local Kinesis and DynamoDB emulators ...")
	srv, err := localaws.Start(ctx, localaws.Options{})
	if err != nil {
		return nil, err
	}
	stream := localaws.UniqueName("demo")
	if err := srv.CreateStream(ctx, srv.KinesisClient(), stream, 2); err != nil {
		_ = srv.Stop()
		return nil, err
	}
	fmt.Printf("stream %s (2 shards) on %s, lease table on %s\n", stream, srv.KinesisEndpoint, srv.DynamoDBEndpoint)
	return &target{srv: srv, props: map[string]string{
		"streamName":       stream,
		"consumerName":     "kinesis-demo",
		"region":           srv.Region,
		"endpoint":         srv.KinesisEndpoint,
		"dynamoDBEndpoint": srv.DynamoDBEndpoint,
		"accessKey":        localaws.AccessKeyID,
		"secretKey":        localaws.SecretAccessKey,
		"initialPosition":  "TRIM_HORIZON",
	}}, nil
}

func newBinding(ctx context.Context, name string, props map[string]string) (bindings.InputOutputBinding, error) {
	log := logger.NewLogger("kinesis-demo." + name)
	log.SetOutputLevel(logger.WarnLevel)
	b := kinesisbinding.NewAWSKinesis(log)
	if err := b.Init(ctx, bindings.Metadata{Base: metadata.Base{Name: name, Properties: props}}); err != nil {
		return nil, err
	}
	return b, nil
}

func send(ctx context.Context, out bindings.OutputBinding, n int, key, data string) error {
	for i := 1; i <= n; i++ {
		body := data
		if body == "" {
			body = fmt.Sprintf(`{"n":%d,"at":%q}`, i, time.Now().UTC().Format(time.RFC3339Nano))
		}
		md := map[string]string{}
		if key != "" {
			md["partitionKey"] = key
		}
		resp, err := out.Invoke(ctx, &bindings.InvokeRequest{Operation: bindings.CreateOperation, Data: []byte(body), Metadata: md})
		if err != nil {
			return fmt.Errorf("send #%d: %w", i, err)
		}
		fmt.Printf("sent     #%d shardId=%s sequenceNumber=%s data=%s\n", i, resp.Metadata["shardId"], resp.Metadata["sequenceNumber"], body)
	}
	return nil
}

// printRecord shows a record as the app behind daprd would get it: data plus metadata.
func printRecord(n int64, r *bindings.ReadResponse) {
	keys := make([]string, 0, len(r.Metadata))
	for k := range r.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, r.Metadata[k])
	}
	fmt.Printf("received #%d%s data=%s\n", n, b.String(), r.Data)
}

func runSend(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("send", flag.ExitOnError)
	file := fs.String("f", "", "Dapr component file (bindings.aws.kinesis); none: local emulators")
	n := fs.Int("n", 1, "records to send")
	key := fs.String("key", "", "partition key (default: a random UUID per record)")
	_ = fs.Parse(args)

	t, err := resolveTarget(ctx, *file)
	if err != nil {
		return err
	}
	defer t.close()
	out, err := newBinding(ctx, "send", t.props)
	if err != nil {
		return err
	}
	return errors.Join(send(ctx, out, *n, *key, strings.Join(fs.Args(), " ")), out.Close())
}

func runRead(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("read", flag.ExitOnError)
	file := fs.String("f", "", "Dapr component file (bindings.aws.kinesis); none: local emulators")
	forDur := fs.Duration("for", 0, "stop after this long (0: until Ctrl-C)")
	_ = fs.Parse(args)

	t, err := resolveTarget(ctx, *file)
	if err != nil {
		return err
	}
	defer t.close()
	in, err := newBinding(ctx, "read", t.props)
	if err != nil {
		return err
	}
	defer in.Close()

	var count atomic.Int64 // shards are delivered in parallel
	err = in.Read(ctx, func(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
		printRecord(count.Add(1), r)
		return nil, nil
	})
	if err != nil {
		return err
	}
	if t.srv != nil {
		// Local emulators start empty: put a few records so there is something to read.
		out, err := newBinding(ctx, "send", t.props)
		if err != nil {
			return err
		}
		if err := errors.Join(send(ctx, out, 3, "", ""), out.Close()); err != nil {
			return err
		}
	}
	fmt.Println("reading; Ctrl-C to stop")
	if *forDur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *forDur)
		defer cancel()
	}
	<-ctx.Done()
	return nil
}

func runRoundtrip(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("roundtrip", flag.ExitOnError)
	n := fs.Int("n", 10, "records to send and read back")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	_ = fs.Parse(args)

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	t, err := resolveTarget(ctx, "")
	if err != nil {
		return err
	}
	defer t.close()

	// daprd creates one instance per direction; so does the demo.
	in, err := newBinding(ctx, "input", t.props)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := newBinding(ctx, "output", t.props)
	if err != nil {
		return err
	}
	defer out.Close()

	received := make(chan struct{}, *n)
	var count atomic.Int64 // shards are delivered in parallel
	start := time.Now()
	err = in.Read(ctx, func(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
		printRecord(count.Add(1), r)
		received <- struct{}{}
		return nil, nil
	})
	if err != nil {
		return fmt.Errorf("starting the input binding: %w", err)
	}
	fmt.Printf("input binding started in %s\n", time.Since(start).Round(time.Millisecond))
	if err := send(ctx, out, *n, "", ""); err != nil {
		return err
	}
	for i := range *n {
		select {
		case <-received:
		case <-ctx.Done():
			return fmt.Errorf("only %d of %d records came back before the timeout", i, *n)
		}
	}
	fmt.Printf("round trip done: %d records sent and received in %s\n", *n, time.Since(start).Round(time.Millisecond))
	return nil
}
