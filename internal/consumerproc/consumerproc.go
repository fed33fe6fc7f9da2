// Package consumerproc runs an input binding in a process of its own, for the commands that
// measure several replicas (kinesis-soak, kinesis-bench-queue): each consumer's RSS is its own and
// it can die alone. The command re-executes its own binary with ChildArg; the child reports each
// record on stdout as "R <data> <unix nanos at the handler>" before acknowledging it, and its logs
// go to stderr, which the parent writes to a file.
package consumerproc

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"

	kinesisbinding "github.com/dapr-kinesis/kinesis"
)

const (
	// ChildArg is the first argument of a consumer process.
	ChildArg       = "-consumer-child"
	childPropsEnv  = "KINESIS_CONSUMER_PROPS"
	handlerTimeEnv = "KINESIS_CONSUMER_HANDLER_TIME"
	stopGrace      = 15 * time.Second
)

// IsChild reports whether this process was started as a consumer (Start); main then calls RunChild.
func IsChild() bool { return len(os.Args) > 1 && os.Args[1] == ChildArg }

// RunChild runs the binding the parent described until SIGTERM, and returns the exit code.
func RunChild() int {
	log := logger.NewLogger("consumer")
	log.SetOutput(os.Stderr)
	var props map[string]string
	if err := json.Unmarshal([]byte(os.Getenv(childPropsEnv)), &props); err != nil {
		fmt.Fprintln(os.Stderr, "consumer: props:", err)
		return 2
	}
	handlerTime, err := time.ParseDuration(cmp.Or(os.Getenv(handlerTimeEnv), "0s"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer: handler time:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	b := kinesisbinding.NewAWSKinesis(log)
	if initErr := b.Init(ctx, bindings.Metadata{Base: metadata.Base{Properties: props}}); initErr != nil {
		fmt.Fprintln(os.Stderr, "consumer: init:", initErr)
		return 2
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	err = b.Read(ctx, func(_ context.Context, resp *bindings.ReadResponse) ([]byte, error) {
		time.Sleep(handlerTime) // the app's work
		now := time.Now().UnixNano()
		mu.Lock()
		defer mu.Unlock()
		// Flushed before the handler returns: a record is reported before it is acknowledged.
		fmt.Fprintf(out, "R %s %d\n", resp.Data, now)
		return nil, out.Flush()
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer: read:", err)
		return 2
	}
	mu.Lock()
	fmt.Fprintln(out, "READY")
	_ = out.Flush()
	mu.Unlock()
	<-ctx.Done()
	if err := b.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "consumer: close:", err)
		return 1
	}
	return 0
}

// Proc is the parent's handle on a consumer process.
type Proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	ready   chan struct{}
	output  chan struct{} // closed when stdout is drained
}

// Start starts a consumer process of the component props whose handler takes handlerTime; each
// delivery goes to onRecord(data, handlerNanos). Its log is name.log in logDir.
func Start(name string, props map[string]string, handlerTime time.Duration, logDir string, onRecord func(data string, at int64)) (*Proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", name, err)
	}
	raw, err := json.Marshal(props)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", name, err)
	}
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", name, err)
	}
	defer logFile.Close() // the child holds its own descriptor

	cmd := exec.Command(self, ChildArg)
	cmd.Env = append(os.Environ(), childPropsEnv+"="+string(raw), handlerTimeEnv+"="+handlerTime.String())
	cmd.Stderr = logFile
	cmd.SysProcAttr = childProcAttr()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("consumer %s: start: %w", name, err)
	}
	p := &Proc{name: name, cmd: cmd, logPath: logPath, ready: make(chan struct{}), output: make(chan struct{})}
	go p.readOutput(stdout, onRecord)
	return p, nil
}

func (p *Proc) readOutput(stdout io.Reader, onRecord func(string, int64)) {
	defer close(p.output)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	readyOnce := sync.OnceFunc(func() { close(p.ready) })
	defer readyOnce() // a child that dies before READY must not leave waitReady hanging
	for sc.Scan() {
		line := sc.Text()
		if line == "READY" {
			readyOnce()
			continue
		}
		rest, ok := strings.CutPrefix(line, "R ")
		if !ok {
			continue
		}
		i := strings.LastIndexByte(rest, ' ')
		if i < 0 {
			continue
		}
		at, err := strconv.ParseInt(rest[i+1:], 10, 64)
		if err != nil {
			continue
		}
		onRecord(rest[:i], at)
	}
}

// WaitReady waits until the consumer's Read has returned.
func (p *Proc) WaitReady(ctx context.Context) error {
	select {
	case <-p.ready:
	case <-ctx.Done():
		return fmt.Errorf("consumer %s: not ready: %w", p.name, ctx.Err())
	}
	select {
	case <-p.output:
		return fmt.Errorf("consumer %s exited during start-up; see %s", p.name, p.logPath)
	default:
		return nil
	}
}

// Name is the consumer's name, as given to Start.
func (p *Proc) Name() string { return p.name }

// PID is the consumer process's.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Kill ends the consumer with SIGKILL, as a crash would: no Close, no final checkpoint.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.output
	_ = p.cmd.Wait()
}

// Stop asks the consumer to close its binding and exit, and kills it after stopGrace.
func (p *Proc) Stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() {
		<-p.output
		exited <- p.cmd.Wait()
	}()
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case err := <-exited:
		if err != nil {
			return fmt.Errorf("consumer %s: %w (see %s)", p.name, err, p.logPath)
		}
		return nil
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-exited
		return errors.New("consumer " + p.name + " did not exit within " + stopGrace.String() + " of SIGTERM; killed")
	}
}

// RSSKiB reads a process's resident set size from /proc (Linux).
func RSSKiB(pid int) (int, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("rss of %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, fmt.Errorf("rss of %d: no VmRSS line", pid)
}
