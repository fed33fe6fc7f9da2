package localaws

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	stopGrace     = 3 * time.Second
	probeInterval = 25 * time.Millisecond
	probeTimeout  = 2 * time.Second
	logTailBytes  = 4 << 10
)

// server is one emulator process. It is kept apart from Servers so that a
// fault-injection test can later stop and restart a single server.
type server struct {
	name    string
	port    int
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has been reaped
	waitErr error         // the process's exit; read only after done
	// signalled is set before we signal the process, so that an exit nobody
	// asked for can be told apart and reported.
	signalled atomic.Bool
}

func startKinesisLocal(modules, logDir string, plainPort, tlsPort int, persistDir string, persistInterval time.Duration) (*server, error) {
	env := []string{
		"KINESIS_MOCK_PLAIN_PORT=" + strconv.Itoa(plainPort),
		"KINESIS_MOCK_TLS_PORT=" + strconv.Itoa(tlsPort),
		// Without it the server looks for server.json in its working directory.
		"KINESIS_MOCK_CERT_PATH=" + filepath.Join(modules, "kinesis-local", "server.json"),
		// The 500 ms defaults make every stream and consumer change slow to test.
		"CREATE_STREAM_DURATION=50ms",
		"DELETE_STREAM_DURATION=50ms",
		"REGISTER_STREAM_CONSUMER_DURATION=50ms",
		"DEREGISTER_STREAM_CONSUMER_DURATION=50ms",
		"SPLIT_SHARD_DURATION=50ms",
		"MERGE_SHARDS_DURATION=50ms",
		"UPDATE_SHARD_COUNT_DURATION=50ms",
		"SHARD_LIMIT=1000", // the lease bench runs 1,000 shards
		"LOG_LEVEL=WARN",
		// Pinned so a developer's own AWS_REGION or persistence settings cannot
		// change what the tests see.
		"AWS_REGION=" + Region,
	}
	if persistDir == "" {
		env = append(env, "SHOULD_PERSIST_DATA=false", "LOAD_DATA_IF_EXISTS=false")
	} else {
		// It writes all its data every interval; RestartKinesis waits for a write.
		env = append(env, "SHOULD_PERSIST_DATA=true", "LOAD_DATA_IF_EXISTS=true",
			"PERSIST_PATH="+persistDir, "PERSIST_FILE_NAME="+persistFile,
			"PERSIST_INTERVAL="+persistInterval.String())
	}
	return startNode("kinesis-local", logDir, plainPort, env,
		filepath.Join(modules, "kinesis-local", "main.js"))
}

//go:embed hangup_guard.js
var hangupGuard []byte

// writeHangupGuard writes the preload that keeps dynalite and kinesalite alive
// when a client hangs up mid-request (see the file) and returns its path.
func writeHangupGuard(logDir string) (string, error) {
	path := filepath.Join(logDir, "hangup_guard.js")
	if err := os.WriteFile(path, hangupGuard, 0o644); err != nil {
		return "", fmt.Errorf("localaws: hang-up guard: %w", err)
	}
	return path, nil
}

func startDynalite(modules, logDir string, port int) (*server, error) {
	guard, err := writeHangupGuard(logDir)
	if err != nil {
		return nil, err
	}
	// Short state changes: a table still CREATING answers
	// ResourceNotFoundException, and the tests create one per consumer.
	return startNode("dynalite", logDir, port, nil,
		"--require", guard, filepath.Join(modules, "dynalite", "cli.js"),
		"--host", "127.0.0.1", "--port", strconv.Itoa(port),
		"--createTableMs", "50", "--deleteTableMs", "50", "--updateTableMs", "50")
}

func startKinesalite(modules, logDir string, port int) (*server, error) {
	guard, err := writeHangupGuard(logDir)
	if err != nil {
		return nil, err
	}
	return startNode("kinesalite", logDir, port, nil,
		"--require", guard, filepath.Join(modules, "kinesalite", "cli.js"),
		"--port", strconv.Itoa(port),
		"--createStreamMs", "50", "--deleteStreamMs", "50", "--updateStreamMs", "50",
		"--shardLimit", "200")
}

// startNode runs node directly (no shell, no npx) so that the PID we hold is
// the server itself and signals reach it.
func startNode(name, logDir string, port int, env []string, args ...string) (*server, error) {
	logPath := filepath.Join(logDir, name+".log")
	// Appended to, so that a restarted server's log follows its predecessor's.
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("localaws: %s log: %w", name, err)
	}
	// The child holds its own descriptor; ours is only needed until Start.
	defer logFile.Close()

	cmd := exec.Command("node", args...)
	cmd.Dir = logDir // anything the server writes relative to its cwd lands here
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("localaws: start %s: %w", name, err)
	}

	s := &server{name: name, port: port, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		if !s.signalled.Load() {
			// Tests then fail with "connection refused"; this says why, and
			// the log directory is gone by the time anyone looks.
			fmt.Fprintf(os.Stderr, "localaws: %s (pid %d) exited on its own: %v%s\n",
				name, cmd.Process.Pid, s.waitErr, s.logTail())
		}
		close(s.done)
	}()
	return s, nil
}

func (s *server) endpoint() string {
	return "http://127.0.0.1:" + strconv.Itoa(s.port)
}

// waitReady polls probe until it succeeds, the process exits or ctx ends.
func (s *server) waitReady(ctx context.Context, probe func(context.Context) error) error {
	ticker := time.NewTicker(probeInterval)
	defer ticker.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		err := probe(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("localaws: %s exited during start-up (%v)%s", s.name, s.waitErr, s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("localaws: %s not ready on port %d: %w (last probe: %v)%s",
				s.name, s.port, ctx.Err(), err, s.logTail())
		case <-ticker.C:
		}
	}
}

// signal sends sig to the server's process group unless the server has been
// reaped. Until then its PID, which is the group id (Setpgid), cannot be
// reused, so the signal reaches only what we started.
func (s *server) signal(sig syscall.Signal) error {
	select {
	case <-s.done:
		return nil
	default:
	}
	s.signalled.Store(true)
	if err := syscall.Kill(-s.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("localaws: signal %s (pid %d): %w", s.name, s.cmd.Process.Pid, err)
	}
	return nil
}

// waitOrKill waits up to grace for the server to exit, then kills its group.
func (s *server) waitOrKill(grace time.Duration) error {
	timer := time.NewTimer(max(grace, 0))
	defer timer.Stop()
	select {
	case <-s.done:
		return nil
	case <-timer.C:
	}
	if err := s.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-s.done
	return nil
}

// logTail returns the end of the server's log, formatted to follow an error.
func (s *server) logTail() string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > logTailBytes {
		_, _ = f.Seek(-logTailBytes, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	tail := strings.TrimSpace(string(b))
	if tail == "" {
		return ""
	}
	return fmt.Sprintf("\n--- end of %s output ---\n%s", s.name, tail)
}

// freePorts reserves n distinct loopback ports by holding all listeners open
// until every port is known. Another process may still take one before the
// servers bind; the server then exits and Start reports it.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("localaws: free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
