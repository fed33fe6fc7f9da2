package localaws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

const (
	// persistFile is kinesis-local's data file inside Options.PersistDir.
	persistFile = "kinesis-data.json"
	// defaultPersistInterval is how often kinesis-local writes its data; a
	// restart waits for two writes.
	defaultPersistInterval = time.Second
	// persistPoll and persistSettle detect the end of a write: the file's
	// modification time and size unchanged for persistSettle.
	persistPoll   = 25 * time.Millisecond
	persistSettle = 150 * time.Millisecond
)

// RestartKinesis restarts kinesis-local with its data: a Kinesis server
// restarting mid-stream. Clients keep their endpoint; their open connections
// are reset and new ones too until the server is back. It returns once the new
// server answers ListStreams. It needs Options.PersistDir.
//
// Every write acknowledged before the restart is kept. kinesis-local's own
// graceful stop cannot promise that here: it waits up to 30 s for open
// connections, and longer still for connections it stopped reading after a
// client reset or half-closed them, and it stops its periodic writes meanwhile.
// So: new requests are refused first; once a periodic write that began after
// that has ended, its content (every acknowledged write) is kept, the process
// is killed, the content is put back in case the kill interrupted a later
// write, and the server is started again on the same ports.
func (s *Servers) RestartKinesis(ctx context.Context) error {
	if s.persistDir == "" {
		return errors.New("localaws: RestartKinesis needs Options.PersistDir, or the data would be lost")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*s.persistInterval+2*defaultStartTimeout)
		defer cancel()
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("localaws: RestartKinesis after Stop")
	}
	s.relay.Refuse()
	defer s.relay.Resume()
	refused := time.Now()

	path := filepath.Join(s.persistDir, persistFile)
	data, err := waitForWriteAfter(ctx, path, refused)
	if err != nil {
		return fmt.Errorf("localaws: restart kinesis-local: %w", err)
	}
	old := s.kinesis
	if err = old.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-old.done
	if err = os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("localaws: restart kinesis-local: restore data: %w", err)
	}

	srv, err := startKinesisLocal(s.modules, s.logDir, s.kinesisPorts[0], s.kinesisPorts[1], s.persistDir, s.persistInterval)
	if err != nil {
		return err
	}
	s.kinesis = srv
	s.httpClient.CloseIdleConnections() // the start-up probe's, to the old process
	if err := srv.waitReady(ctx, s.probeKinesis(srv.endpoint())); err != nil {
		return fmt.Errorf("localaws: restart kinesis-local: %w", err)
	}
	return nil
}

// waitForWriteAfter returns the content of the data file once a write that
// began after t has ended. Writes follow one another, so the second write seen
// to end after t began after t. A write has ended when the file has stopped
// changing and holds valid JSON: a file caught mid-write is truncated JSON.
func waitForWriteAfter(ctx context.Context, path string, t time.Time) ([]byte, error) {
	type state struct {
		mod  time.Time
		size int64
	}
	var last, ended state
	var since time.Time
	writes := 0
	ticker := time.NewTicker(persistPoll)
	defer ticker.Stop()
	for {
		if fi, err := os.Stat(path); err == nil {
			cur := state{fi.ModTime(), fi.Size()}
			switch {
			case cur != last:
				last, since = cur, time.Now()
			case cur != ended && cur.mod.After(t) && time.Since(since) >= persistSettle:
				data, err := os.ReadFile(path)
				if err != nil || !json.Valid(data) {
					since = time.Now() // a slow write paused: look again later
					break
				}
				ended = cur
				if writes++; writes >= 2 {
					return data, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no complete write of %s after the restart began: %w", path, ctx.Err())
		case <-ticker.C:
		}
	}
}
