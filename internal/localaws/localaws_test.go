package localaws

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dapr-kinesis/kinesis/internal/testwait"
)

// TestMain also fails the package if a goroutine outlives the tests: Run has
// stopped the servers and the goroutines that reap them by then.
func TestMain(m *testing.M) {
	code := Run(m, Options{Kinesalite: true})
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: goroutines outlived the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// TestStartStop runs its own set beside the shared one, which also shows that
// two sets do not collide on ports.
func TestStartStop(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	began := time.Now()
	s, err := Start(t.Context(), Options{Kinesalite: true})
	require.NoError(t, err)
	t.Logf("kinesis-local, dynalite and kinesalite ready in %v", time.Since(began).Round(time.Millisecond))

	for _, ep := range []string{s.KinesisEndpoint, s.DynamoDBEndpoint, s.KinesaliteEndpoint} {
		assert.Regexp(t, `^http://127\.0\.0\.1:\d+$`, ep)
	}
	assert.Equal(t, "us-east-1", s.Region)
	_, err = s.KinesisClient().ListStreams(t.Context(), &kinesis.ListStreamsInput{})
	require.NoError(t, err, "kinesis-local")
	_, err = s.DynamoDBClient().ListTables(t.Context(), &dynamodb.ListTablesInput{})
	require.NoError(t, err, "dynalite")
	_, err = s.KinesaliteClient().ListStreams(t.Context(), &kinesis.ListStreamsInput{})
	require.NoError(t, err, "kinesalite")

	pids := []int{s.kinesis.cmd.Process.Pid, s.dynamo.cmd.Process.Pid, s.kinesalite.cmd.Process.Pid}
	for _, pid := range pids {
		require.NoError(t, syscall.Kill(pid, 0), "pid %d should run before Stop", pid)
	}

	began = time.Now()
	require.NoError(t, s.Stop())
	t.Logf("stopped in %v", time.Since(began).Round(time.Millisecond))
	for _, pid := range pids {
		requireGone(t, pid)
	}
	assert.NoDirExists(t, s.logDir)
	require.NoError(t, s.Stop(), "second Stop")
}

func TestStartWithoutEmulators(t *testing.T) {
	t.Setenv(EmulatorsDirEnv, t.TempDir())

	_, err := Start(t.Context(), Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "make deps")
	assert.Contains(t, err.Error(), "npm ci --prefix tools/emulators")
	assert.Contains(t, err.Error(), "kinesis-local/main.js")
}

func TestStartFailures(t *testing.T) {
	// The pid file is renamed into place: a server stopped between writeFileSync's create and its
	// write would leave an empty file for the test to read.
	const idle = `const fs = require("fs"); fs.writeFileSync(__dirname + "/pid.tmp", String(process.pid)); ` +
		`fs.renameSync(__dirname + "/pid.tmp", __dirname + "/pid"); setInterval(() => {}, 1e6);`
	tests := map[string]struct {
		kinesisLocal string
		timeout      time.Duration
		wantErr      []string
		wantIs       error
	}{
		"server exits": {
			kinesisLocal: `console.error("boom: no such thing"); process.exit(3);`,
			timeout:      10 * time.Second,
			wantErr:      []string{"kinesis-local exited during start-up", "exit status 3", "boom: no such thing"},
		},
		"server never answers": {
			kinesisLocal: `console.log("pretending"); setInterval(() => {}, 1e6);`,
			// Long enough for node to start and print, which the error must quote: at 300 ms a
			// loaded machine reached the deadline before node had printed anything (seen once).
			timeout: 5 * time.Second,
			wantErr: []string{"kinesis-local not ready", "pretending"},
			wantIs:  context.DeadlineExceeded,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			tmp := t.TempDir()
			dir := fakeEmulators(t, tt.kinesisLocal, idle)
			t.Setenv("TMPDIR", tmp) // where Start puts its log dir

			began := time.Now()
			_, err := Start(t.Context(), Options{StartTimeout: tt.timeout})
			require.Error(t, err)
			for _, want := range tt.wantErr {
				assert.Contains(t, err.Error(), want)
			}
			if tt.wantIs != nil {
				require.ErrorIs(t, err, tt.wantIs)
			}
			assert.Less(t, time.Since(began), tt.timeout+5*time.Second)

			// Stop ran: it removes the log dir once every server has exited.
			entries, err := os.ReadDir(tmp)
			require.NoError(t, err)
			assert.Empty(t, entries)
			// The idle server may have been stopped before it wrote its pid.
			if b, err := os.ReadFile(filepath.Join(dir, "dynalite", "pid")); err == nil {
				pid, err := strconv.Atoi(string(b))
				require.NoError(t, err)
				requireGone(t, pid)
			}
		})
	}
}

func TestStopKillsServerIgnoringSIGTERM(t *testing.T) {
	script := filepath.Join(t.TempDir(), "stubborn.js")
	require.NoError(t, os.WriteFile(script,
		[]byte(`process.on("SIGTERM", () => console.log("ignored")); console.log("up"); setInterval(() => {}, 1e6);`), 0o600))
	srv, err := startNode("stubborn", t.TempDir(), 0, nil, script)
	require.NoError(t, err)
	testwait.Eventually(t, func() bool { return strings.Contains(srv.logTail(), "up") },
		10*time.Second, 10*time.Millisecond, "node should install its handler")

	require.NoError(t, srv.signal(syscall.SIGTERM))
	require.NoError(t, srv.waitOrKill(200*time.Millisecond))
	requireGone(t, srv.cmd.Process.Pid)
	assert.Contains(t, srv.logTail(), "ignored")
	assert.ErrorContains(t, srv.waitErr, "killed")
}

// fakeEmulators lays out a node_modules with stand-in servers and points
// Start at it.
func fakeEmulators(t *testing.T, kinesisLocal, dynalite string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"kinesis-local/main.js":     kinesisLocal,
		"kinesis-local/server.json": "{}",
		"dynalite/cli.js":           dynalite,
	}
	for name, body := range files {
		path := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	}
	t.Setenv(EmulatorsDirEnv, dir)
	return dir
}

// requireGone checks that neither the process nor its group exists. Stop reaps
// its children, so a finished process does not linger as a zombie.
func requireGone(t *testing.T, pid int) {
	t.Helper()
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "pid %d still exists", pid)
	require.ErrorIs(t, syscall.Kill(-pid, 0), syscall.ESRCH, "process group %d still exists", pid)
}

// TestServersSurviveAClientThatHangsUp: a client whose context is cancelled
// closes its connection mid-request; unguarded, dynalite and kinesalite die of it.
func TestServersSurviveAClientThatHangsUp(t *testing.T) {
	s := Get(t)
	for _, ep := range []struct{ name, endpoint, target string }{
		{"dynalite", s.DynamoDBEndpoint, "DynamoDB_20120810.ListTables"},
		{"kinesalite", s.KinesaliteEndpoint, "Kinesis_20131202.ListStreams"},
	} {
		addr := strings.TrimPrefix(ep.endpoint, "http://")
		for range 3 {
			conn, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			// Headers promise a body that never comes: the request is still being read.
			_, err = fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: 100\r\n"+
				"X-Amz-Target: %s\r\n\r\n{", addr, ep.target)
			require.NoError(t, err, ep.name)
			time.Sleep(20 * time.Millisecond)
			require.NoError(t, conn.Close())
		}
	}
	time.Sleep(200 * time.Millisecond) // the servers see the close and, unguarded, exit
	_, err := s.DynamoDBClient().ListTables(t.Context(), &dynamodb.ListTablesInput{})
	require.NoError(t, err, "dynalite must still answer after clients hung up mid-request")
	_, err = s.KinesaliteClient().ListStreams(t.Context(), &kinesis.ListStreamsInput{})
	require.NoError(t, err, "kinesalite must still answer after clients hung up mid-request")
}
