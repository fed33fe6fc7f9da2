package kinesis

import (
	"context"
	"errors"

	"github.com/dapr/components-contrib/bindings"
)

// Read starts consuming the stream in the configured mode and returns once the consumer runs, as daprd
// expects. The consumer stops when ctx ends or on Close.
func (a *AWSKinesis) Read(ctx context.Context, handler bindings.Handler) error {
	if a.closed.Load() {
		return ErrClosed
	}
	if !a.initDone.Load() {
		return errors.New("kinesis binding error: Read before Init")
	}
	if err := a.meta.inputReady(); err != nil {
		return err
	}

	start := a.startShared
	if a.meta.Mode == modeExtended {
		start = a.startExtended
	}
	in, err := start(ctx, handler)
	if err != nil {
		return err
	}

	a.closeMu.Lock()
	defer a.closeMu.Unlock()
	if a.closed.Load() {
		return errors.Join(ErrClosed, in.Close())
	}
	a.inputs = append(a.inputs, in)
	return nil
}
