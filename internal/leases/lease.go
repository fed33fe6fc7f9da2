package leases

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/dapr-kinesis/kinesis/internal/position"
	"github.com/dapr/kit/logger"
)

// Lease is this worker's hold on one shard, from the moment it is taken until it is lost, handed
// over, released or finished. Its methods are safe for concurrent use; its writes are serialised,
// so that a renewal never races a checkpoint or the final write.
type Lease struct {
	c     *Coordinator
	shard Shard
	log   logger.Logger

	lost      chan struct{}
	handoff   chan struct{}
	lostOnce  sync.Once
	claimOnce sync.Once

	writeMu sync.Mutex // held across each write of this lease
	mu      sync.Mutex // guards the fields below
	counter int64
	claim   string    // the claimant this worker last saw, "" when none
	renewed time.Time // last successful write that proved the lease (monotonic)
	done    bool      // handed over, released, finished or lost: no write any more
}

func (l *Lease) Shard() Shard { return l.shard }

// Lost is closed when the lease is lost. Delivery of the shard must stop at once.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// HandoffRequested is closed when another replica claimed the lease: the engine stops reading, lets
// the handler call in flight finish, and calls HandOff with the final checkpoint.
func (l *Lease) HandoffRequested() <-chan struct{} { return l.handoff }

// markLost ends the lease locally; it is idempotent.
func (l *Lease) markLost(why string) {
	l.mu.Lock()
	wasDone := l.done
	l.done = true
	l.mu.Unlock()
	l.lostOnce.Do(func() { close(l.lost) })
	if !wasDone {
		l.log.Infof("Lease lost: %s", why)
		l.c.forget(l)
	}
}

// sawClaim notes a claim by another worker and asks the engine to hand the lease over.
func (l *Lease) sawClaim(claimant string) {
	if claimant == "" || claimant == l.c.cfg.WorkerID {
		return
	}
	l.mu.Lock()
	l.claim = claimant
	l.mu.Unlock()
	l.claimOnce.Do(func() {
		l.log.Infof("Lease claimed by %s; handing it over", claimant)
		close(l.handoff)
	})
}

// write runs one conditional write of the lease, unless it is done. A refused condition means the
// lease is lost, except where the caller handles it (lostOnRefusal false).
func (l *Lease) write(ctx context.Context, what string, u update, lostOnRefusal bool) (item, error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	done := l.done
	l.mu.Unlock()
	if done {
		return item{}, fmt.Errorf("kinesis binding error: %s of shard %s: %w", what, l.shard.ID, ErrLeaseLost)
	}
	if u.names == nil {
		u.names = names()
	}
	if u.values == nil {
		u.values = map[string]dtypes.AttributeValue{}
	}
	u.values[":me"] = str(l.c.cfg.WorkerID)
	it, err := l.c.table.update(ctx, l.shard.ID, what, u)
	if errors.Is(err, errConditionFailed) && lostOnRefusal {
		l.markLost(what + " refused: another worker holds the lease")
		return item{}, fmt.Errorf("%w: %w", err, ErrLeaseLost)
	}
	return it, err
}

// Checkpoint writes cp ("seq" or "seq:sub") if this worker still owns the lease. It rewrites
// LeaseTimeout too, at no extra cost: to a replica without heartbeats (an older version of this
// binding, upstream's), a checkpoint is proof that the lease is alive.
func (l *Lease) Checkpoint(ctx context.Context, cp string) error {
	_, err := l.write(ctx, "checkpoint", update{
		set:       "#cp = :cp, #timeout = :timeout",
		condition: "#owner = :me",
		values:    map[string]dtypes.AttributeValue{":cp": str(cp), ":timeout": str(l.c.leaseTimeout())},
	}, true)
	return err
}

// renew extends the lease, bumping its counter, on the condition that nobody wrote it meanwhile
// (ProtocolRenewal).
func (l *Lease) renew(ctx context.Context) error {
	l.mu.Lock()
	counter := l.counter
	l.mu.Unlock()
	it, err := l.write(ctx, "lease renewal", update{
		set:       "#timeout = :timeout, #counter = :next",
		condition: "#owner = :me AND #counter = :counter",
		values: map[string]dtypes.AttributeValue{
			":timeout": str(l.c.leaseTimeout()), ":counter": num(counter), ":next": num(counter + 1),
		},
	}, true)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.counter = it.counter
	l.renewed = time.Now()
	l.mu.Unlock()
	l.sawClaim(it.claim)
	return nil
}

// HandOff gives the lease to the replica that claimed it, with checkpoint cp ("" keeps the stored
// one), in one conditional write; the claimant reads from cp at its next pass. If the claim was
// withdrawn meanwhile, the lease is released instead (with cp). The Lease is done afterwards.
func (l *Lease) HandOff(ctx context.Context, cp string) error {
	l.mu.Lock()
	claimant := l.claim
	l.mu.Unlock()
	if claimant == "" {
		return l.Release(ctx, cp)
	}
	u := update{
		set:       "#owner = :claimant, #timeout = :timeout, #counter = #counter + :one",
		remove:    "#claim",
		condition: "#owner = :me AND #claim = :claimant",
		values:    map[string]dtypes.AttributeValue{":claimant": str(claimant), ":timeout": str(l.c.leaseTimeout()), ":one": num(1)},
	}
	withCheckpoint(&u, cp)
	_, err := l.write(ctx, "lease handoff", u, false)
	if errors.Is(err, errConditionFailed) {
		// The claim is gone (withdrawn, or another worker took the lease): release, or find it lost.
		l.mu.Lock()
		l.claim = ""
		l.mu.Unlock()
		return l.Release(ctx, cp)
	}
	if err != nil {
		return err
	}
	l.end("handed over to " + claimant)
	return nil
}

// Release writes cp ("" keeps the stored one) and gives the lease up in one conditional write, so that
// any replica takes it at its next pass. A pending claim is honoured: the claimant gets the lease.
// The Lease is done afterwards.
func (l *Lease) Release(ctx context.Context, cp string) error {
	l.mu.Lock()
	claimant := l.claim
	l.mu.Unlock()
	if claimant != "" {
		return l.HandOff(ctx, cp)
	}
	u := update{
		set:       "#counter = #counter + :one",
		remove:    "#owner",
		condition: "#owner = :me",
		values:    map[string]dtypes.AttributeValue{":one": num(1)},
	}
	withCheckpoint(&u, cp)
	if _, err := l.write(ctx, "lease release", u, true); err != nil {
		return err
	}
	l.end("released")
	return nil
}

// Finish marks the shard read to its end (SHARD_END) and gives the lease up, in one conditional
// write; the coordinator then lists the stream and runs a pass at once, so that the children start
// without delay. The Lease is done afterwards.
func (l *Lease) Finish(ctx context.Context) error {
	if _, err := l.write(ctx, "marking the shard finished", update{
		set:       "#cp = :end, #counter = #counter + :one",
		remove:    "#owner, #claim",
		condition: "#owner = :me",
		values:    map[string]dtypes.AttributeValue{":end": str(position.ShardEnd), ":one": num(1)},
	}, true); err != nil {
		return err
	}
	l.end("shard finished")
	l.c.shardEnded()
	return nil
}

func withCheckpoint(u *update, cp string) {
	if cp == "" {
		return
	}
	u.set += ", #cp = :cp"
	u.values[":cp"] = str(cp)
}

// end marks the lease done after its final write, and announces the change to the other replicas.
func (l *Lease) end(how string) {
	l.mu.Lock()
	l.done = true
	l.mu.Unlock()
	l.log.Debugf("Lease %s", how)
	l.c.forget(l)
	l.c.announce()
}
