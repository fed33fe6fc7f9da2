package localaws

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// EmulatorsDirEnv names the node_modules directory holding the emulators,
// for running outside this repository's tree.
const EmulatorsDirEnv = "KINESIS_EMULATORS_DIR"

const installHint = "run `make deps` (npm ci --prefix tools/emulators) at the repository root"

// emulatorsDir returns the node_modules directory holding the emulators and
// checks that the entry points Start needs are there.
func emulatorsDir(kinesalite bool) (string, error) {
	dir := os.Getenv(EmulatorsDirEnv)
	from := EmulatorsDirEnv
	if dir == "" {
		from = "the module root"
		root, err := moduleRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "tools", "emulators", "node_modules")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("localaws: emulators dir: %w", err)
	}

	entries := []string{"kinesis-local/main.js", "kinesis-local/server.json", "dynalite/cli.js"}
	if kinesalite {
		entries = append(entries, "kinesalite/cli.js")
	}
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(dir, e)); err != nil {
			return "", fmt.Errorf("localaws: emulators not installed (%s missing in %s, found via %s): %s: %w",
				e, dir, from, installHint, err)
		}
	}
	return dir, nil
}

// moduleRoot walks up from the working directory (a package directory under
// `go test`) to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("localaws: %w", err)
	}
	for {
		_, err := os.Stat(filepath.Join(dir, "go.mod"))
		if err == nil {
			return dir, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("localaws: find go.mod: %w", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("localaws: no go.mod above the working directory; set %s or %s",
				EmulatorsDirEnv, installHint)
		}
		dir = parent
	}
}
