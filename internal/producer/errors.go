package producer

import "errors"

// ErrClosed is returned, bare, by a put that came after Close began: nothing was sent. A put that
// Close's grace period cut short fails with an error that wraps it and says whether the record may
// have been written.
var ErrClosed = errors.New("kinesis binding error: binding is closed")
