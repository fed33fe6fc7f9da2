//go:build linux

package kinesis

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dapr-kinesis/kinesis/internal/localaws"
	"github.com/dapr-kinesis/kinesis/internal/position"
	"github.com/dapr-kinesis/kinesis/internal/testwait"
	"github.com/dapr/components-contrib/bindings"
)

// Crash tests: real processes (this test binary, started again in a child mode, see
// reliability_crash_child_test.go) killed with SIGKILL, which no deferred function or Close survives.

// child is a running crash-test child process.
type child struct {
	name string
	cmd  *exec.Cmd

	mu     sync.Mutex
	lines  []string // protocol lines, without "@@"
	logs   []string // everything else the child printed
	output chan struct{}
}

// startChild runs this test binary in a child mode. The child dies with the test (Pdeathsig) and
// is killed, if still running, when the test ends; its logs are shown if the test failed.
func startChild(t *testing.T, name, mode string, props map[string]string, env ...string) *child {
	t.Helper()
	raw, err := json.Marshal(props)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{crashChildEnv + "=" + mode, crashPropsEnv + "=" + string(raw)}, env...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = cmd.Stdout // one pipe keeps logs and protocol lines in the order written
	c := &child{name: name, cmd: cmd, output: make(chan struct{})}
	require.NoError(t, cmd.Start())
	go func() {
		defer close(c.output)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.mu.Lock()
			if line, ok := strings.CutPrefix(sc.Text(), "@@"); ok {
				c.lines = append(c.lines, line)
			} else {
				c.logs = append(c.logs, sc.Text())
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			c.mu.Lock()
			t.Logf("--- %s output (last 40 lines) ---\n%s", name, strings.Join(c.logs[max(0, len(c.logs)-40):], "\n"))
			c.mu.Unlock()
		}
	})
	return c
}

// protocol returns the child's lines starting with kind ("R", "OK"), without it.
func (c *child) protocol(kind string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.lines {
		if rest, ok := strings.CutPrefix(l, kind+" "); ok {
			out = append(out, rest)
		} else if l == kind {
			out = append(out, "")
		}
	}
	return out
}

// logged reports whether the child wrote a log line containing s.
func (c *child) logged(s string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.ContainsFunc(c.logs, func(line string) bool { return strings.Contains(line, s) })
}

func (c *child) waitLine(t *testing.T, kind string, timeout time.Duration) {
	t.Helper()
	testwait.Eventually(t, func() bool { return len(c.protocol(kind)) > 0 }, timeout, 20*time.Millisecond,
		"%s never said %s", c.name, kind)
}

// kill SIGKILLs the child, if it still runs, and waits until it is reaped and its output read.
func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.output
		_ = c.cmd.Wait()
	}
}

// stop asks the child to close its binding and exit, and returns how it exited.
func (c *child) stop(grace time.Duration) error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() {
		<-c.output
		exited <- c.cmd.Wait()
	}()
	select {
	case err := <-exited:
		return err
	case <-time.After(grace):
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		return errors.New(c.name + " did not exit within " + grace.String() + " of SIGTERM")
	}
}

// TestConsumerKilledMidStreamAnotherTakesOver: consumer A reads every shard; consumer B joins with
// the same consumerName; A is SIGKILLed while records are being put. Every record must be
// delivered by A or B; A's records not yet checkpointed may come again from B. In extended mode B
// subscribes to A's shards once their leases expire, after A's last checkpoint.
func TestConsumerKilledMidStreamAnotherTakesOver(t *testing.T) {
	t.Parallel()
	for _, mode := range []consumerMode{modeShared, modeExtended} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			consumerKilledMidStream(t, mode)
		})
	}
}

func consumerKilledMidStream(t *testing.T, mode consumerMode) {
	srv := localaws.Get(t)
	stream := localaws.NewStreamOn(t, srv, 4)
	props := withConsumer(serverProps(srv, stream, srv.KinesisEndpoint, srv.DynamoDBEndpoint), mode)
	client := srv.KinesisClient()

	a := startChild(t, "consumer A", "consumer", props)
	a.waitLine(t, "READY", firstDeliveryTimeout)
	sent, err := putLanes(t.Context(), client, stream, "c", faultLanes, 0, 10)
	require.NoError(t, err)
	testwait.Eventually(t, func() bool { return len(missingFrom(sent, a.protocol("R"))) == 0 },
		firstDeliveryTimeout, 50*time.Millisecond, "A should read the first records")

	b := startChild(t, "consumer B", "consumer", props)
	b.waitLine(t, "READY", firstDeliveryTimeout)

	produced := make(chan []string, 1)
	go func() { produced <- producePaced(t, client, stream, "c", faultLanes, 10, 60, 5, 250*time.Millisecond) }()
	time.Sleep(1500 * time.Millisecond)
	a.kill()
	killedAt := len(a.protocol("R"))
	sent = append(sent, <-produced...)
	more, err := putLanes(t.Context(), client, stream, "c", faultLanes, 70, 80)
	require.NoError(t, err)
	sent = append(sent, more...)

	testwait.Eventually(t, func() bool {
		return len(missingFrom(sent, append(a.protocol("R"), b.protocol("R")...))) == 0
	}, recoveryTimeout, 100*time.Millisecond, "A's shards should be taken over by B")
	require.NoError(t, b.stop(30*time.Second), "B closes cleanly")

	res := checkNoneLost(t, sent, append(a.protocol("R"), b.protocol("R")...))
	if mode == modeExtended {
		assert.True(t, b.logged("Fan-out reader started"), "B read through SubscribeToShard")
	}
	t.Logf("A delivered %d records before it was killed, B %d", killedAt, len(b.protocol("R")))
	assert.Positive(t, killedAt)
	assert.Subset(t, b.protocol("R"), more, "records put after the kill come from B")
	t.Logf("%d records delivered twice: A's, after its last checkpoint", res.duplicates)
}

// TestQueueReplicaKilledMidStreamItsRecordsReachAnother: in mode queue, replica A is SIGKILLed while
// records are being put; the records it held come back after the queue's visibility timeout, to
// replica B, and every record is delivered. No lease is involved: B was reading all along.
func TestQueueReplicaKilledMidStreamItsRecordsReachAnother(t *testing.T) {
	t.Parallel()
	tg := newQueueTarget(t)
	props := tg.props(t, "queueVisibilityTimeout", "2s")

	a := startChild(t, "queue A", "consumer", props)
	a.waitLine(t, "READY", firstDeliveryTimeout)
	b := startChild(t, "queue B", "consumer", props)
	b.waitLine(t, "READY", firstDeliveryTimeout)

	produced := make(chan []string, 1)
	go func() {
		produced <- producePaced(t, tg.direct, tg.stream, "q", faultLanes, 0, 60, 5, 250*time.Millisecond)
	}()
	time.Sleep(1500 * time.Millisecond)
	a.kill()
	killedAt := len(a.protocol("R"))
	sent := <-produced
	more, err := putLanes(t.Context(), tg.direct, tg.stream, "q", faultLanes, 60, 70)
	require.NoError(t, err)
	sent = append(sent, more...)

	testwait.Eventually(t, func() bool {
		return len(missingFrom(sent, append(a.protocol("R"), b.protocol("R")...))) == 0
	}, recoveryTimeout, 100*time.Millisecond, "what A held reaches B after the visibility timeout")
	require.NoError(t, b.stop(30*time.Second), "B closes cleanly")

	res := checkNoneLost(t, sent, append(a.protocol("R"), b.protocol("R")...))
	t.Logf("A delivered %d records before it was killed, B %d; %d delivered twice", killedAt, len(b.protocol("R")), res.duplicates)
	assert.Positive(t, killedAt, "A was reading when it was killed")
	assert.Subset(t, b.protocol("R"), more, "records put after the kill come from B")
}

// TestProducerKilledWhileCallersWait: a producer process with many callers waiting on creates
// (a proxy adds latency so that calls are always in flight) is SIGKILLed. Every record whose
// create returned success before the kill must be in the stream, exactly as sent and where the
// binding said it was.
func TestProducerKilledWhileCallersWait(t *testing.T) {
	t.Parallel()
	srv := localaws.Get(t)
	for path, extra := range outputPaths {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			stream := localaws.NewStreamOn(t, srv, 2)
			proxy := newFaultProxy(t, srv.KinesisEndpoint)
			proxy.SetLatency(100 * time.Millisecond)
			props := withProps(serverProps(srv, stream, proxy.URL(), srv.DynamoDBEndpoint), extra)

			p := startChild(t, "producer", "producer", props, crashPrefixEnv+"=p", crashCallersEnv+"=16")
			p.waitLine(t, "READY", 30*time.Second)
			testwait.Eventually(t, func() bool { return len(p.protocol("OK")) >= 150 }, 60*time.Second, 10*time.Millisecond)
			inFlight := proxy.Stats().Active
			p.kill()

			confirmed := map[string]bool{}
			var outcomes []createOutcome
			for _, line := range p.protocol("OK") {
				f := strings.Fields(line)
				require.Len(t, f, 3, line)
				_, lane, _, ok := parseLaneRecord(f[0])
				require.True(t, ok, line)
				confirmed[f[0]] = true
				outcomes = append(outcomes, createOutcome{data: f[0], key: laneKey(lane), shard: f[1], seq: f[2]})
			}
			// Records sent but not confirmed when the process died: the caller never learned
			// their fate; they may or may not be in the stream.
			for _, data := range p.protocol("TRY") {
				if !confirmed[data] {
					_, lane, _, _ := parseLaneRecord(data)
					outcomes = append(outcomes, createOutcome{data: data, key: laneKey(lane), err: errProducerKilled})
				}
			}
			res := checkCreates(t, srv, stream, outcomes)
			t.Logf("killed with %d connections open and %d creates unanswered; %d of those are in the stream",
				inFlight, res.failed, res.unconfirmedWritten)
		})
	}
}

var errProducerKilled = errors.New("the producer was killed before the create returned")

// missingFrom returns the records of want not in got.
func missingFrom(want, got []string) []string {
	have := make(map[string]bool, len(got))
	for _, g := range got {
		have[g] = true
	}
	var out []string
	for _, w := range want {
		if !have[w] {
			out = append(out, w)
		}
	}
	return out
}

// TestConcurrentConsumerKilledRedeliversOnlyAfterTheWatermark: a consumer with concurrencyPerShard 8,
// whose calls complete out of order, is SIGKILLed mid-stream. The checkpoint it left is never past a
// record it had not delivered, and the next consumer delivers only records after that checkpoint:
// nothing is lost, and nothing before the watermark comes twice.
func TestConcurrentConsumerKilledRedeliversOnlyAfterTheWatermark(t *testing.T) {
	t.Parallel()
	srv := localaws.Get(t)
	stream := localaws.NewStreamOn(t, srv, 2)
	props := withConsumer(serverProps(srv, stream, srv.KinesisEndpoint, srv.DynamoDBEndpoint), modeShared)
	props["concurrencyPerShard"] = "8"
	client := srv.KinesisClient()

	a := startChild(t, "consumer A", "slow-consumer", props)
	a.waitLine(t, "READY", firstDeliveryTimeout)
	sent, err := putLanes(t.Context(), client, stream, "w", 20, 0, 200)
	require.NoError(t, err)
	// Killed mid-stream once both shards have a checkpoint: the watermark is then worth checking.
	testwait.Eventually(t, func() bool {
		_, cps := shLeases(t, props["consumerName"])
		return len(cps) == 2 && cps["shardId-000000000000"] != "" && cps["shardId-000000000001"] != ""
	}, firstDeliveryTimeout, 5*time.Millisecond)
	a.kill()
	require.Less(t, len(a.protocol("R")), len(sent), "A was killed mid-stream")

	byA := map[string]bool{}
	var deliveries []string
	for _, line := range a.protocol("R") {
		f := strings.Fields(line)
		require.Len(t, f, 3, line)
		byA[f[1]+" "+f[2]] = true
		deliveries = append(deliveries, f[0])
	}
	_, cps := shLeases(t, props["consumerName"])
	stored := streamRecords(t, client, stream)
	for shard, cp := range cps {
		for _, r := range stored[shard] {
			if seq := aws.ToString(r.SequenceNumber); !position.SeqLess(cp, seq) {
				assert.True(t, byA[shard+" "+seq], "shard %s: %s is at or before checkpoint %s but A never delivered it", shard, seq, cp)
			}
		}
	}

	var (
		mu    sync.Mutex
		early []string
		byB   []string
	)
	b := newBinding(t, props)
	require.NoError(t, b.Read(t.Context(), func(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		shard, seq := r.Metadata["shardId"], r.Metadata["sequenceNumber"]
		if cp := cps[shard]; cp != "" && !position.SeqLess(cp, seq) {
			early = append(early, shard+" "+seq)
		}
		byB = append(byB, string(r.Data))
		return nil, nil
	}))
	testwait.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(missingFrom(sent, append(append([]string(nil), deliveries...), byB...))) == 0
	}, recoveryTimeout, 100*time.Millisecond, "B delivers what A left")
	require.NoError(t, b.Close())
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, early, "B delivered records at or before A's checkpoint")
	res := checkNoneLost(t, sent, append(deliveries, byB...))
	t.Logf("A delivered %d before the kill, B %d; %d delivered twice, all after the watermark", len(deliveries), len(byB), res.duplicates)
}
