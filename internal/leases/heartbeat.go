package leases

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// The heartbeat item is one item of the lease table, under a key no shard ID can take. Each replica
// keeps one attribute in it, heartbeatPrefix + its worker ID, whose value it changes at every beat;
// AttrGeneration is bumped by every write that changes who holds or claims what, so that the other
// replicas know when the lease items are worth reading again.
const (
	HeartbeatKey    = "heartbeats"
	heartbeatPrefix = "hb/"
	AttrGeneration  = "Generation" // (N)
)

// rosterEntry is a replica's heartbeat as this replica last saw it, since when, and since when
// this replica has seen the other in the heartbeat item at all (monotonic).
type rosterEntry struct {
	value  string
	since  time.Time
	joined time.Time
}

// beatingAt reports whether the replica's heartbeat changed within the lease duration ld: the one
// rule by which this replica judges another alive.
func (e rosterEntry) beatingAt(now time.Time, ld time.Duration) bool { return now.Sub(e.since) < ld }

// beatNames are the expression attribute names of a write of worker's heartbeat.
func beatNames(worker string) map[string]string {
	return map[string]string{"#beat": heartbeatPrefix + worker, "#gen": AttrGeneration}
}

// roster is the heartbeat item as read.
type roster struct {
	generation int64
	beats      map[string]string // worker ID → heartbeat value
}

func parseRoster(av map[string]dtypes.AttributeValue) roster {
	r := roster{beats: map[string]string{}}
	for name, v := range av {
		switch {
		case name == AttrGeneration:
			if n, ok := v.(*dtypes.AttributeValueMemberN); ok {
				r.generation, _ = strconv.ParseInt(n.Value, 10, 64)
			}
		case strings.HasPrefix(name, heartbeatPrefix):
			if s, ok := v.(*dtypes.AttributeValueMemberN); ok {
				r.beats[strings.TrimPrefix(name, heartbeatPrefix)] = s.Value
			}
		}
	}
	return r
}

// observeRoster notes, by this replica's monotonic clock, since when each replica's heartbeat has
// its current value, and the newest generation seen. A replica missing from the item has left.
func (c *Coordinator) observeRoster(r roster, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := make(map[string]rosterEntry, len(r.beats))
	for w, v := range r.beats {
		e, ok := c.roster[w]
		switch {
		case !ok:
			e = rosterEntry{value: v, since: now, joined: now}
		case e.value != v:
			e.value, e.since = v, now
		}
		next[w] = e
	}
	c.roster = next
	c.generation = max(c.generation, r.generation)
}

// beating reports whether the replica's heartbeat is alive: it changed within the lease duration.
// ok is false for a replica that has no heartbeat (an older version of this binding, upstream's, or
// one gone long ago): its leases are judged by their own renewals.
func (c *Coordinator) beating(worker string, now time.Time) (alive, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.roster[worker]
	return ok && e.beatingAt(now, c.cfg.LeaseDuration), ok
}

// fenceAfter is how long a replica goes without a successful heartbeat before it stops delivering:
// the others judge it dead a lease duration after they saw its last beat, which it sent earlier.
func (c *Coordinator) fenceAfter() time.Duration { return 2 * c.cfg.LeaseDuration / 3 }

// untilFence is how long after now this replica must fence itself if no heartbeat goes through (0
// or less: the moment has come), and whether any heartbeat went through yet (if not, there is no
// such moment).
func (c *Coordinator) untilFence(now time.Time) (left time.Duration, armed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastBeat.Add(c.fenceAfter()).Sub(now), !c.lastBeat.IsZero()
}

// fresh reports whether this replica's own last heartbeat went through within fenceAfter: only then
// may it take leases.
func (c *Coordinator) fresh(now time.Time) bool {
	left, armed := c.untilFence(now)
	return armed && left > 0
}

// announce asks for a heartbeat now that bumps the generation: this replica changed a lease.
func (c *Coordinator) announce() {
	c.mu.Lock()
	c.announcing = true
	c.mu.Unlock()
	select {
	case c.beatNow <- struct{}{}:
	default:
	}
}

// heartbeats beats every LeaseDuration/3 after the join Run made, and at once when a change is
// announced, until ctx ends. A replica whose beats fail for fenceAfter stops delivering every lease
// it holds, on time even between two attempts: the others may take them soon after.
func (c *Coordinator) heartbeats(ctx context.Context) {
	every := c.cfg.LeaseDuration / 3
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	fence := time.NewTimer(c.nextFenceCheck(every))
	defer fence.Stop()
	for {
		select {
		case <-ctx.Done():
			c.log.Debugf("Heartbeats stopped: the lease coordinator is stopping")
			return
		case <-fence.C:
			c.fenceIfStale(nil)
		case <-ticker.C:
			c.beat(ctx, every)
		case <-c.beatNow:
			c.beat(ctx, every)
		}
		fence.Reset(c.nextFenceCheck(every))
	}
}

// nextFenceCheck is how long until this replica must fence itself if no heartbeat goes through, or
// every when there is no such moment ahead (no heartbeat yet, or fenced already).
func (c *Coordinator) nextFenceCheck(every time.Duration) time.Duration {
	if left, armed := c.untilFence(time.Now()); armed && left > 0 {
		return left
	}
	return every
}

// fenceIfStale fences when the last heartbeat that went through is fenceAfter old.
func (c *Coordinator) fenceIfStale(cause error) {
	left, armed := c.untilFence(time.Now())
	if !armed || left > 0 {
		return
	}
	why := fmt.Sprintf("no heartbeat went through for %v", (c.fenceAfter() - left).Round(time.Millisecond))
	if cause != nil {
		why += ": " + cause.Error()
	}
	c.fence(why)
}

// beat writes one heartbeat. Its request is bounded so that, with the table unreachable, the fence
// falls on time rather than when a hung request gives up.
func (c *Coordinator) beat(ctx context.Context, every time.Duration) {
	c.mu.Lock()
	announcing := c.announcing
	c.announcing = false
	c.beats++
	value := num(c.session + c.beats)
	c.mu.Unlock()

	sent := time.Now()
	attempt, cancel := context.WithTimeout(ctx, min(every, c.nextFenceCheck(every)))
	defer cancel()
	u := update{
		set:    "#beat = :beat",
		names:  beatNames(c.cfg.WorkerID),
		values: map[string]dtypes.AttributeValue{":beat": value, ":one": num(1)},
	}
	if announcing {
		u.add = "#gen :one"
	}
	got, err := c.table.updateRaw(attempt, HeartbeatKey, "heartbeat", u)
	if err == nil {
		c.mu.Lock()
		c.lastBeat = sent
		c.mu.Unlock()
		c.observeRoster(parseRoster(got), time.Now())
		if c.beatFailing.Swap(false) {
			c.log.Infof("Heartbeats work again")
		}
		return
	}
	if ctx.Err() != nil {
		return
	}
	if announcing {
		c.mu.Lock()
		c.announcing = true // announced with the next beat that goes through
		c.mu.Unlock()
	}
	if !c.beatFailing.Swap(true) {
		c.log.Warnf("Heartbeat failed, trying again every %v: %v", every, err)
	}
	c.fenceIfStale(err)
}

// fence stops delivery of every held lease: this replica cannot prove it is alive, so the others
// will soon take its leases. Once its heartbeats go through again, a pass takes back those the
// table still names it for.
func (c *Coordinator) fence(why string) {
	held := c.Held()
	for _, l := range held {
		l.markLost(why)
	}
	c.mu.Lock()
	c.scanDue = c.scanDue || len(held) > 0
	c.mu.Unlock()
}

// leave removes this replica's heartbeat, once it gave up every lease, so that the others do not
// wait for it to die to count it out.
func (c *Coordinator) leave(ctx context.Context) error {
	_, err := c.table.updateRaw(ctx, HeartbeatKey, "leaving the heartbeats", update{
		remove: "#beat",
		add:    "#gen :one",
		names:  beatNames(c.cfg.WorkerID),
		values: map[string]dtypes.AttributeValue{":one": num(1)},
	})
	return err
}

// forgetAfter is how long a replica's heartbeat must have stood still before it is forgotten.
func (c *Coordinator) forgetAfter() time.Duration {
	return max(c.forgetDeadAfter, 2*c.cfg.LeaseDuration)
}

// forgettable returns the replicas (other than this one) whose heartbeat stood still for
// forgetAfter, with the value it stood at.
func (c *Coordinator) forgettable(now time.Time) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]string{}
	for w, e := range c.roster {
		if w != c.cfg.WorkerID && now.Sub(e.since) >= c.forgetAfter() {
			out[w] = e.value
		}
	}
	return out
}

// forgetDead removes the heartbeats of replicas dead for forgetAfter that own no lease, so that the
// heartbeat item does not grow with every replica ever started. Each removal is conditional on the
// value seen: a replica that came back keeps its entry.
func (c *Coordinator) forgetDead(ctx context.Context, byShard map[string]item, now time.Time) {
	dead := c.forgettable(now)
	if len(dead) == 0 {
		return
	}
	c.mu.Lock()
	c.forgotAt = now
	c.mu.Unlock()
	for _, it := range byShard {
		delete(dead, it.owner)
	}
	for w, value := range dead {
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			continue
		}
		_, err = c.table.updateRaw(ctx, HeartbeatKey, "forgetting a dead replica's heartbeat", update{
			remove:    "#beat",
			condition: "#beat = :seen",
			names:     beatNames(w),
			values:    map[string]dtypes.AttributeValue{":seen": num(n)},
		})
		switch {
		case err == nil:
			c.log.Infof("Forgot the heartbeat of %s, stopped for %v", w, c.forgetAfter())
		case !errors.Is(err, errConditionFailed) && ctx.Err() == nil:
			c.log.Debugf("%v", err)
		}
	}
}

// newSession is where this process's heartbeat values start: a replica restarted under the same
// worker ID must not write a value the others saw from its previous life. Ten digits keep each
// replica's attribute near 50 bytes: the heartbeat item of 20 replicas stays within one write unit.
func newSession() int64 { return rand.Int64N(1 << 31) }
