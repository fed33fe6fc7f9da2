package kinesis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/schemas"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/aws/smithy-go/transport/http/protocol/awsjson"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/backoff"
	"github.com/dapr/kit/logger"
)

const (
	// minSubscribeInterval is AWS's limit: one SubscribeToShard call per second per consumer and shard.
	minSubscribeInterval = time.Second
	// subscribeRetryFirst is the first wait after a failed subscription; it doubles while they keep
	// failing, up to the guard's maximum.
	subscribeRetryFirst = time.Second
	subscribeRetryMax   = 30 * time.Second

	// subscribeToShardEvent is the event type of a SubscribeToShard event that carries records.
	subscribeToShardEvent = "SubscribeToShardEvent"
)

// subscribeGuard is middleware on the Kinesis client KCL's enhanced fan-out shard consumers call.
// It makes up, at the SDK boundary and without forking KCL (v1.0.0), for what KCL leaves out around
// SubscribeToShard:
//   - Pacing. After a SubscribeToShard call fails KCL gives the lease up and subscribes again from
//     the checkpoint at the next shard sync, and after a subscription ends it resubscribes at once:
//     with a persistent fault (ResourceInUseException, throttling, a broken network) that is a retry
//     every second or faster. The guard spaces the calls for a shard (AWS allows one per second),
//     backs off exponentially while they keep failing, and logs each failure episode once, at its
//     start (at error level when only an operator can end it), and its end.
//   - How a subscription ended. KCL never reads the event stream's Err(), except when it resubscribes:
//     then it logs the error at error level and gives the lease up. The guard relays the response
//     frame by frame, records an exception frame or a broken connection as a failure, and shows KCL
//     a plain end of stream, so that KCL resubscribes from its continuation sequence number on the
//     lease it holds.
//   - Close. KCL subscribes with context.TODO(); the guard ties every subscription to the consumer's
//     lifetime, so that stopping the consumer ends an open subscription at once.
type subscribeGuard struct {
	lifetime context.Context //nolint:containedctx // the consumer's lifetime; KCL passes no context
	log      logger.Logger
	retryMax time.Duration

	mu     sync.Mutex
	shards map[string]*shardSubscriptions
}

// shardSubscriptions is what the guard remembers of one shard's subscriptions.
type shardSubscriptions struct {
	lastCall time.Time // start of the last SubscribeToShard call
	failures int       // failed subscriptions since the last one that delivered an event
	retryAt  time.Time // while failing, no call before this
}

// newSubscribeGuard returns a guard for one consumer. lifetime ends when the consumer stops. retryMax
// caps the backoff; it should stay well under the lease duration, since KCL holds the shard's lease,
// without renewing it, while a subscription call waits.
func newSubscribeGuard(lifetime context.Context, log logger.Logger, retryMax time.Duration) *subscribeGuard {
	return &subscribeGuard{
		lifetime: lifetime,
		log:      log,
		retryMax: min(max(retryMax, subscribeRetryFirst), subscribeRetryMax),
		shards:   map[string]*shardSubscriptions{},
	}
}

// kinesisOption installs the guard on a Kinesis client (kinesis.New/NewFromConfig option).
func (g *subscribeGuard) kinesisOption(o *kinesis.Options) {
	o.APIOptions = append(o.APIOptions, g.addTo)
	o.Protocol = eventStreamProtocol{ClientProtocol: o.Protocol}
}

// eventStreamProtocol is the Kinesis protocol with a codec of its own for each event stream call.
// smithy-go (v1.28) keeps its event stream decoding state in one codec per client, which every open
// stream uses without synchronization (aws/smithy-go#714): harmless today, as that state is never
// read back, but a data race once two subscriptions are open, and the race detector fails every
// test of this mode. A fresh codec costs a few small allocations per event.
type eventStreamProtocol struct {
	smithyhttp.ClientProtocol
}

func (eventStreamProtocol) DeserializeEventMessage(schema *smithy.Schema, types *smithy.TypeRegistry, r io.Reader) (smithy.Deserializable, error) {
	return awsjson.New11(schemas.Kinesis_20131202).DeserializeEventMessage(schema, types, r)
}

func (eventStreamProtocol) DeserializeInitialResponse(schema *smithy.Schema, r io.Reader, out smithy.Deserializable) error {
	return awsjson.New11(schemas.Kinesis_20131202).DeserializeInitialResponse(schema, r, out)
}

func (g *subscribeGuard) addTo(stack *middleware.Stack) error {
	if err := stack.Initialize.Add(middleware.InitializeMiddlewareFunc("KinesisBindingSubscribeGuard", g.handleInitialize), middleware.Before); err != nil {
		return err
	}
	// Last in the deserialize step: it sees the raw response before the SDK's event stream reader.
	return stack.Deserialize.Add(middleware.DeserializeMiddlewareFunc("KinesisBindingSubscriptionWatch", g.handleDeserialize), middleware.After)
}

type subscriptionKey struct{}

func (g *subscribeGuard) handleInitialize(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (
	middleware.InitializeOutput, middleware.Metadata, error,
) {
	params, ok := in.Parameters.(*kinesis.SubscribeToShardInput)
	if !ok {
		return next.HandleInitialize(ctx, in)
	}
	shardID := aws.ToString(params.ShardId)
	if err := g.admit(ctx, shardID); err != nil {
		return middleware.InitializeOutput{}, middleware.Metadata{}, err
	}

	subCtx, cancel := context.WithCancel(ctx)
	stopCancel := context.AfterFunc(g.lifetime, cancel)
	sub := &subscription{guard: g, shardID: shardID, release: func() { stopCancel(); cancel() }}
	out, md, err := next.HandleInitialize(context.WithValue(subCtx, subscriptionKey{}, sub), in)
	if err != nil {
		sub.release()
		g.failed(shardID, err)
	}
	return out, md, err
}

func (g *subscribeGuard) handleDeserialize(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (
	middleware.DeserializeOutput, middleware.Metadata, error,
) {
	out, md, err := next.HandleDeserialize(ctx, in)
	sub, ok := ctx.Value(subscriptionKey{}).(*subscription)
	if !ok || err != nil {
		return out, md, err
	}
	if resp, ok := out.RawResponse.(*smithyhttp.Response); ok && resp.StatusCode == http.StatusOK {
		resp.Body = &watchedBody{body: resp.Body, sub: sub}
	}
	return out, md, err
}

// admit waits until the shard may be subscribed again.
func (g *subscribeGuard) admit(ctx context.Context, shardID string) error {
	g.mu.Lock()
	st := g.shard(shardID)
	at := st.lastCall.Add(minSubscribeInterval)
	if st.retryAt.After(at) {
		at = st.retryAt
	}
	g.mu.Unlock()

	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return fmt.Errorf("kinesis binding error: subscribing to shard %s: %w", shardID, ctx.Err())
	case <-g.lifetime.Done():
		return fmt.Errorf("%w (not subscribing to shard %s)", errConsumerStopping, shardID)
	}
	if g.lifetime.Err() != nil { // a zero wait races the stop
		return fmt.Errorf("%w (not subscribing to shard %s)", errConsumerStopping, shardID)
	}
	g.mu.Lock()
	st.lastCall = time.Now()
	g.mu.Unlock()
	return nil
}

// failed records a failed subscription and sets when the shard may be tried again.
func (g *subscribeGuard) failed(shardID string, err error) {
	if g.lifetime.Err() != nil {
		return // stopping: the subscription was ended on purpose
	}
	g.mu.Lock()
	st := g.shard(shardID)
	st.failures++
	n := st.failures
	wait := backoff.Jitter(min(subscribeRetryFirst<<min(n-1, 16), g.retryMax))
	st.retryAt = time.Now().Add(wait)
	g.mu.Unlock()

	log := g.log.WithFields(map[string]any{readShardID: shardID, "attempt": n})
	switch {
	case n > 1:
		log.Debugf("Subscription to the shard failed again; next attempt in %v: %v", wait, err)
	case needsOperator(err):
		log.Errorf("Subscription to the shard failed and will keep failing until the cause is fixed; retrying with backoff: %v", err)
	default:
		log.Warnf("Subscription to the shard failed; subscribing again with backoff, after the last delivered record: %v", err)
	}
}

// needsOperator tells the failures that retrying does not cure: a consumer or stream that is gone,
// permissions, credentials, the stream's KMS key.
func needsOperator(err error) bool {
	err = awserr.Classify(err)
	return errors.Is(err, ErrStreamNotFound) || errors.Is(err, ErrAccessDenied) ||
		errors.Is(err, ErrInvalidCredentials) || errors.Is(err, ErrKMS)
}

// delivering records that a subscription delivers events again: it ends a failure episode.
func (g *subscribeGuard) delivering(shardID string) {
	g.mu.Lock()
	st := g.shard(shardID)
	n := st.failures
	st.failures, st.retryAt = 0, time.Time{}
	g.mu.Unlock()
	if n > 0 {
		g.log.WithFields(map[string]any{readShardID: shardID}).Infof("Subscription to the shard recovered after %d failed attempts", n)
	}
}

// shard returns the shard's state; g.mu must be held.
func (g *subscribeGuard) shard(shardID string) *shardSubscriptions {
	st, ok := g.shards[shardID]
	if !ok {
		st = &shardSubscriptions{}
		g.shards[shardID] = st
	}
	return st
}

// subscription follows one SubscribeToShard response as the SDK reads it.
type subscription struct {
	guard   *subscribeGuard
	shardID string
	release func() // ends the request's context; called once the stream is closed

	once sync.Once
}

// end records how the subscription ended, once: a failure, or nil for the end of the stream (AWS
// ends each after 5 minutes) or a Close by KCL.
func (s *subscription) end(failure error) {
	s.once.Do(func() {
		if failure != nil {
			s.guard.failed(s.shardID, failure)
		}
	})
}

// watchedBody is the body of a 200 SubscribeToShard response, the event stream, relayed to the SDK's
// reader one whole frame at a time. An exception frame or a broken connection ends the relay as a
// clean end of stream, after the guard has recorded the failure: KCL then resubscribes from its
// continuation sequence number on the lease it holds (through the guard's backoff), where a stream
// error would make it log at error level and give the lease up. A broken frame is never passed on.
type watchedBody struct {
	body io.ReadCloser
	sub  *subscription

	frame     []byte // the frame being relayed
	off       int    // how much of it the SDK has read
	buf       []byte // reused for the frames
	done      bool
	delivered bool // an event arrived on this subscription
}

func (b *watchedBody) Read(p []byte) (int, error) {
	if b.off == len(b.frame) {
		if b.done {
			return 0, io.EOF
		}
		if !b.nextFrame() {
			b.done = true
			return 0, io.EOF
		}
	}
	n := copy(p, b.frame[b.off:])
	b.off += n
	return n, nil
}

// nextFrame reads the next frame to relay; false ends the stream.
func (b *watchedBody) nextFrame() bool {
	frame, err := readFrame(b.body, b.buf)
	if err != nil {
		switch {
		case errors.Is(err, io.EOF): // between frames: the server ended the stream
			err = nil
		case !errors.Is(err, errNotEventStream):
			err = fmt.Errorf("connection lost: %w", err)
		}
		b.sub.end(err)
		return false
	}
	b.buf = frame
	f := parseFrame(frame)
	if err := f.failure(); err != nil {
		b.sub.end(err)
		return false
	}
	if f.eventType == subscribeToShardEvent && !b.delivered {
		b.delivered = true
		b.sub.guard.delivering(b.sub.shardID)
	}
	b.frame, b.off = frame, 0
	return true
}

// Close is KCL (through the SDK) ending the subscription: a read it interrupts is no failure, so the
// end is recorded first.
func (b *watchedBody) Close() error {
	b.sub.end(nil)
	err := b.body.Close()
	b.sub.release()
	return err
}
