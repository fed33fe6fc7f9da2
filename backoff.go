package kinesis

import (
	"math/rand/v2"
	"time"
)

// jitter spreads d over [d/2, d] so that replicas and shards backing off together do not retry in step.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}
