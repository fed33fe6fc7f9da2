package localaws

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fatalRecorder records Fatal calls instead of ending the test, so that a
// test can check what Get reports to the tests that call it.
type fatalRecorder struct {
	testing.TB
	fatals []string
}

func (r *fatalRecorder) Helper()                         {}
func (r *fatalRecorder) Logf(format string, args ...any) {}
func (r *fatalRecorder) Fatal(args ...any)               { r.fatals = append(r.fatals, fmt.Sprint(args...)) }

func TestGetFailsEveryCallerWithTheSameError(t *testing.T) {
	t.Setenv(EmulatorsDirEnv, t.TempDir())
	var l lazy
	l.enable(Options{})

	first, second := &fatalRecorder{TB: t}, &fatalRecorder{TB: t}
	assert.Nil(t, l.get(first))
	// Installing the emulators now must not matter: the outcome is cached.
	t.Setenv(EmulatorsDirEnv, "")
	assert.Nil(t, l.get(second))

	require.Len(t, first.fatals, 1)
	assert.Contains(t, first.fatals[0], "make deps")
	assert.Equal(t, first.fatals, second.fatals)
}

func TestGetWithoutRun(t *testing.T) {
	var l lazy
	r := &fatalRecorder{TB: t}
	assert.Nil(t, l.get(r))
	require.Len(t, r.fatals, 1)
	assert.Contains(t, r.fatals[0], "localaws.Run")
}
