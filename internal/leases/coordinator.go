package leases

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/dapr-kinesis/kinesis/internal/awserr"
	"github.com/dapr-kinesis/kinesis/internal/position"
	"github.com/dapr/kit/logger"
)

const (
	// writeParallelism bounds the lease writes one pass (or renewal round) has in flight: 64 shards
	// are taken in a few round trips, without a burst of 64 requests.
	writeParallelism = 8
	// shardListMaxAge is how old the shard listing may grow while no shard ends. Every reshard ends a
	// shard, which triggers a listing at once; this only bounds how long a listing missed through an
	// error, or a shard ending under a replica that died before writing SHARD_END, goes unnoticed.
	shardListMaxAge = time.Minute
	// fullPassMaxAge bounds how long a replica trusts what it last read of the lease items while the
	// heartbeats show no change: a change announced by a replica that died before its announcement
	// went through, or an operator's edit, is seen within it.
	fullPassMaxAge = 5 * time.Minute
	// deadForgottenAfter is how long a dead replica's heartbeat stays in the heartbeat item (at least
	// two lease durations).
	deadForgottenAfter = 10 * time.Minute
)

// observation is when this replica first saw a lease in its current version, by its monotonic clock.
type observation struct {
	version string
	since   time.Time
}

// claimSighting is when this replica first saw a claim, by its monotonic clock.
type claimSighting struct {
	claimant string
	since    time.Time
}

// Coordinator runs the lease passes and renewals of one replica.
type Coordinator struct {
	cfg   Config
	table *table
	log   logger.Logger
	wall  func() time.Time

	wake            chan struct{} // a pass is due now (a shard ended)
	beatNow         chan struct{} // a heartbeat is due now (a change to announce)
	stopTaking      chan struct{}
	stopOnce        sync.Once
	idle            chan struct{} // signalled when the last held lease is done after StopTaking
	session         int64
	beatFailing     atomic.Bool   // the last heartbeat failed: its failure was logged
	forgetDeadAfter time.Duration // deadForgottenAfter; tests shorten it

	mu        sync.Mutex
	held      map[string]*Lease
	claims    map[string]time.Time // shards this worker claimed and does not hold yet, and when
	seen      map[string]observation
	claimsAt  map[string]claimSighting
	listing   *shardListing
	listDue   bool
	failing   bool // the last step failed: its failure was logged
	getDenied bool // reading the heartbeat item alone is denied: its failure was logged

	// Heartbeats and the passes they decide; times are monotonic.
	beats      int64
	lastBeat   time.Time // when the last heartbeat that went through was sent
	announcing bool      // a change waits to be announced with the next heartbeat
	roster     map[string]rosterEntry
	generation int64    // the newest generation seen
	passGen    int64    // the generation known before the last full pass
	passLive   []string // replicas whose heartbeat was alive at the last full pass
	lastPass   time.Time
	nextPass   time.Time // a claim or a heartbeat-less lease may expire then
	scanDue    bool      // the last pass left something to do
	forgotAt   time.Time // when dead replicas' heartbeats were last forgotten (or tried)
}

// New checks cfg and returns a Coordinator; it makes no request.
func New(cfg Config) (*Coordinator, error) {
	switch {
	case cfg.DB == nil || cfg.Kinesis == nil:
		return nil, errors.New("kinesis binding error: lease coordinator needs DynamoDB and Kinesis clients")
	case cfg.Table == "" || cfg.Stream == "" || cfg.WorkerID == "":
		return nil, errors.New("kinesis binding error: lease coordinator needs a table, a stream and a worker ID")
	case cfg.LeaseDuration <= 0 || cfg.PassInterval <= 0:
		return nil, errors.New("kinesis binding error: lease coordinator needs a lease duration and a pass interval")
	}
	wall := cfg.Wall
	if wall == nil {
		wall = time.Now
	}
	switch cfg.Protocol {
	case "":
		cfg.Protocol = ProtocolHeartbeat
	case ProtocolHeartbeat, ProtocolRenewal:
	default:
		return nil, fmt.Errorf("kinesis binding error: unknown lease protocol %q", cfg.Protocol)
	}
	return &Coordinator{
		cfg:             cfg,
		table:           &table{db: cfg.DB, name: cfg.Table},
		log:             cfg.Log,
		wall:            wall,
		wake:            make(chan struct{}, 1),
		beatNow:         make(chan struct{}, 1),
		stopTaking:      make(chan struct{}),
		idle:            make(chan struct{}, 1),
		session:         newSession(),
		forgetDeadAfter: deadForgottenAfter,
		held:            map[string]*Lease{},
		claims:          map[string]time.Time{},
		seen:            map[string]observation{},
		claimsAt:        map[string]claimSighting{},
		roster:          map[string]rosterEntry{},
		listDue:         true,
	}, nil
}

// leaseTimeout is the LeaseTimeout written with a take or renewal: for people and older readers.
func (c *Coordinator) leaseTimeout() string {
	return c.wall().Add(c.cfg.LeaseDuration).UTC().Format(time.RFC3339Nano)
}

func (c *Coordinator) taking() bool {
	select {
	case <-c.stopTaking:
		return false
	default:
		return true
	}
}

// Held returns the leases this worker holds now.
func (c *Coordinator) Held() []*Lease {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Lease, 0, len(c.held))
	for _, l := range c.held {
		out = append(out, l)
	}
	return out
}

// forget drops a lease that is done.
func (c *Coordinator) forget(l *Lease) {
	c.mu.Lock()
	if c.held[l.shard.ID] == l {
		delete(c.held, l.shard.ID)
	}
	empty := len(c.held) == 0
	c.mu.Unlock()
	if empty && !c.taking() {
		select {
		case c.idle <- struct{}{}:
		default:
		}
	}
}

// shardEnded lists the stream and runs a pass at once, so that the children of a finished shard
// start without waiting for the next pass.
func (c *Coordinator) shardEnded() {
	c.mu.Lock()
	c.listDue = true
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run joins the heartbeats and runs steps (and, with ProtocolRenewal, renewals), calling acquired
// (from this goroutine) for every lease taken, until StopTaking and then every held lease is done,
// when it leaves the heartbeats, or until ctx ends (then held leases are abandoned, not released,
// and the heartbeat stays to die: a crash, for tests). Run returns when its goroutines ended.
func (c *Coordinator) Run(ctx context.Context, acquired func(*Lease)) error {
	beatCtx, stopBeats := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop := func() {
		stopBeats()
		wg.Wait()
	}
	defer stop()
	every := c.cfg.LeaseDuration / 3
	c.mu.Lock()
	c.announcing = true // the others count a replica that joined for their share at their next pass
	c.mu.Unlock()
	c.beat(beatCtx, every) // joining: the first pass may take leases only once this went through
	wg.Go(func() { c.heartbeats(beatCtx) })
	if c.cfg.Protocol == ProtocolRenewal {
		wg.Go(func() { c.renewals(beatCtx) })
	}

	timer := time.NewTimer(0)
	defer timer.Stop()
	reason := ""
	for reason == "" {
		select {
		case <-ctx.Done():
			reason = "its context ended"
		case <-c.idle:
			if !c.taking() && len(c.Held()) == 0 {
				reason = "every lease was given up"
			}
		case <-c.wake:
			c.step(ctx, acquired)
		case <-timer.C:
			c.step(ctx, acquired)
			timer.Reset(c.cfg.PassInterval)
		}
	}
	if ctx.Err() == nil {
		stop() // no heartbeat may follow the leave
		if err := c.leave(ctx); err != nil {
			reason += fmt.Sprintf("; its heartbeat stays until the others find it stopped: %v", err)
		}
	}
	c.log.Debugf("Lease coordinator stopped: %s", reason)
	return nil
}

// step reads the heartbeats and runs a full pass when one is due.
func (c *Coordinator) step(ctx context.Context, acquired func(*Lease)) {
	why := c.passDue(time.Now())
	if why == "" {
		r, err := c.table.heartbeats(ctx)
		switch {
		case errors.Is(err, awserr.ErrAccessDenied):
			// A policy written for earlier versions, without dynamodb:GetItem: a scan reads the
			// heartbeat item too, at the cost of a scan every step.
			if !c.getDenied {
				c.log.Errorf("The lease table's heartbeat item cannot be read alone (the binding's credentials need dynamodb:GetItem on it); scanning the whole table every %v instead: %v", c.cfg.PassInterval, err)
				c.getDenied = true
			}
			why = "the heartbeat item cannot be read alone"
		case err != nil:
			c.stepFailed(ctx, err)
			return
		default:
			if c.getDenied {
				c.log.Infof("The heartbeat item can be read alone again: scans only when the lease table changed")
				c.getDenied = false
			}
			c.observeRoster(r, time.Now())
			why = c.changed(time.Now())
		}
	}
	if why == "" {
		changed, err := c.relistIfOld(ctx)
		if err != nil {
			c.stepFailed(ctx, err)
			return
		}
		if changed {
			why = "the stream's shards changed"
		}
	}
	if why == "" {
		c.stepWorks()
		return
	}
	c.pass(ctx, acquired, why)
}

// passDue says why a full pass is due without reading anything, or "".
func (c *Coordinator) passDue(now time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.lastPass.IsZero():
		return "first pass"
	case c.cfg.Protocol == ProtocolRenewal:
		return "renewal protocol"
	case c.scanDue:
		return "the last pass left work"
	case c.listDue || c.listing == nil:
		return "the shard listing is due"
	case !c.nextPass.IsZero() && !now.Before(c.nextPass):
		return "a claim, a lease without heartbeat, or a new replica's grace may have expired"
	case now.Sub(c.lastPass) >= fullPassMaxAge:
		return "the last full pass is old"
	}
	return ""
}

// changed says, after a read of the heartbeats, why the lease items are worth reading, or "".
func (c *Coordinator) changed(now time.Time) string {
	c.mu.Lock()
	gen, passGen, live, forgotAt := c.generation, c.passGen, c.passLive, c.forgotAt
	c.mu.Unlock()
	if gen != passGen {
		return "the lease table changed"
	}
	for _, w := range live {
		if alive, _ := c.beating(w, now); !alive {
			return "the heartbeat of " + w + " stopped"
		}
	}
	if len(c.forgettable(now)) > 0 && now.Sub(forgotAt) >= c.forgetAfter() {
		return "a dead replica's heartbeat can be forgotten"
	}
	return ""
}

func (c *Coordinator) stepFailed(ctx context.Context, err error) {
	if ctx.Err() == nil && !c.failing {
		c.log.Warnf("Lease pass failed, trying again every %v: %v", c.cfg.PassInterval, err)
	}
	c.failing = ctx.Err() == nil
}

func (c *Coordinator) stepWorks() {
	if c.failing {
		c.log.Infof("Lease passes work again")
		c.failing = false
	}
}

// StopTaking ends lease taking and claiming (Close begins) and withdraws this worker's pending
// claims; heartbeats (and renewals) go on until every held lease is released, handed over or lost.
func (c *Coordinator) StopTaking(ctx context.Context) error {
	c.stopOnce.Do(func() { close(c.stopTaking) })
	c.mu.Lock()
	claims := make([]string, 0, len(c.claims))
	for id := range c.claims {
		claims = append(claims, id)
	}
	c.claims = map[string]time.Time{}
	empty := len(c.held) == 0
	c.mu.Unlock()
	if empty {
		select {
		case c.idle <- struct{}{}:
		default:
		}
	}
	errs := make([]error, len(claims))
	parallel(len(claims), func(i int) { errs[i] = c.withdraw(ctx, claims[i]) })
	if len(claims) > 0 {
		c.announce()
	}
	return errors.Join(errs...)
}

// pass is one full round of lease coordination; see the package doc.
func (c *Coordinator) pass(ctx context.Context, acquired func(*Lease), why string) {
	c.mu.Lock()
	gen := c.generation // known before the scan: a change the scan misses moves it on
	c.mu.Unlock()
	items, beats, err := c.table.scan(ctx)
	if err == nil {
		err = c.refreshListing(ctx, items)
	}
	if err != nil {
		c.stepFailed(ctx, err)
		return
	}
	c.stepWorks()
	now := time.Now()
	c.observeRoster(beats, now)
	byShard := c.observe(items, now)
	c.mu.Lock()
	c.lastPass, c.passGen, c.scanDue = now, gen, false
	c.passLive = c.passLive[:0]
	for w, e := range c.roster {
		if e.beatingAt(now, c.cfg.LeaseDuration) {
			c.passLive = append(c.passLive, w)
		}
	}
	c.mu.Unlock()
	c.checkHeld(byShard)
	c.forgetDead(ctx, byShard, now)
	if !c.taking() {
		return
	}
	if !c.fresh(now) {
		c.mu.Lock()
		c.scanDue = true // take once a heartbeat went through again
		c.mu.Unlock()
		return
	}
	c.log.Debugf("Lease pass: %s", why)
	plan := c.plan(byShard, now)
	changed := c.take(ctx, plan.take, byShard, acquired)
	if c.cfg.LeaseStealing && c.claim(ctx, plan) {
		changed = true
	}
	if c.withdrawStale(ctx, now) {
		changed = true
	}
	if changed {
		c.announce()
	}
	c.schedule(byShard, now)
}

// schedule sets when the next full pass is due even if the heartbeats show no change: when a
// claim, or a lease whose owner has no heartbeat, may have expired, or a replica that joined lately
// stops counting for the share without leases.
func (c *Coordinator) schedule(byShard map[string]item, now time.Time) {
	var next time.Time
	due := func(since time.Time) {
		at := since.Add(c.cfg.LeaseDuration)
		if at.After(now) && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, it := range byShard {
		if _, beats := c.roster[it.owner]; it.owner != "" && it.owner != c.cfg.WorkerID && !beats {
			due(c.seen[id].since)
		}
		if s, ok := c.claimsAt[id]; ok {
			due(s.since)
		}
	}
	for _, at := range c.claims {
		due(at)
	}
	for w, e := range c.roster {
		if w != c.cfg.WorkerID {
			due(e.joined.Add(c.cfg.LeaseDuration)) // when a replica that joined lately stops counting unless it holds leases
		}
	}
	c.nextPass = next
}

// observe records when each lease's version and claim were first seen, and returns the leases by
// shard.
func (c *Coordinator) observe(items []item, now time.Time) map[string]item {
	byShard := make(map[string]item, len(items))
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[string]observation, len(items))
	claims := map[string]claimSighting{}
	for _, it := range items {
		byShard[it.shardID] = it
		v := it.version()
		if o, ok := c.seen[it.shardID]; ok && o.version == v {
			seen[it.shardID] = o
		} else {
			seen[it.shardID] = observation{version: v, since: now}
		}
		if it.claim != "" {
			if s, ok := c.claimsAt[it.shardID]; ok && s.claimant == it.claim {
				claims[it.shardID] = s
			} else {
				claims[it.shardID] = claimSighting{claimant: it.claim, since: now}
			}
		}
		if _, mine := c.claims[it.shardID]; mine && it.claim != c.cfg.WorkerID {
			// Our claim (placed in an earlier pass, so before this scan) is gone: honoured (the lease
			// names this worker now, and is taken below) or overtaken (another worker took the lease).
			delete(c.claims, it.shardID)
		}
	}
	c.seen, c.claimsAt = seen, claims
	return byShard
}

// alive reports whether the lease has an owner whose heartbeat is alive or, for an owner without a
// heartbeat, that moved the lease on within the lease duration.
func (c *Coordinator) alive(it item, now time.Time) bool {
	if it.owner == "" {
		return false
	}
	if alive, ok := c.beating(it.owner, now); ok {
		return alive
	}
	c.mu.Lock()
	o := c.seen[it.shardID]
	c.mu.Unlock()
	return now.Sub(o.since) < c.cfg.LeaseDuration
}

// liveClaimant returns the claimant of the lease while its claim is younger than the lease duration.
func (c *Coordinator) liveClaimant(it item, now time.Time) string {
	if it.claim == "" {
		return ""
	}
	c.mu.Lock()
	s := c.claimsAt[it.shardID]
	c.mu.Unlock()
	if now.Sub(s.since) >= c.cfg.LeaseDuration {
		return ""
	}
	return it.claim
}

// checkHeld notices, in a scan, held leases another worker owns now, and claims on held leases.
func (c *Coordinator) checkHeld(byShard map[string]item) {
	for _, l := range c.Held() {
		it, ok := byShard[l.shard.ID]
		switch {
		case !ok || it.owner != c.cfg.WorkerID:
			owner := it.owner
			if owner == "" {
				owner = "nobody"
			}
			l.markLost(fmt.Sprintf("the lease table names %s as its owner", owner))
		case it.claim != "" && c.cfg.LeaseStealing:
			l.sawClaim(it.claim)
		}
	}
}

// passPlan is what one pass decided.
type passPlan struct {
	take   []string       // free or expired shards to take, in random order
	target int            // this worker's fair share
	mine   int            // leases held plus claims pending
	load   map[string]int // other workers' leases, pending claims counted for the claimant
	owned  map[string][]string
}

func (c *Coordinator) plan(byShard map[string]item, now time.Time) passPlan {
	me := c.cfg.WorkerID
	leasable := c.leasable(byShard)
	c.mu.Lock()
	held := len(c.held)
	pending := 0
	for id := range c.claims {
		if _, ok := c.held[id]; !ok {
			pending++
		}
	}
	heldSet := make(map[string]bool, len(c.held))
	for id := range c.held {
		heldSet[id] = true
	}
	c.mu.Unlock()

	p := passPlan{load: map[string]int{}, owned: map[string][]string{}}
	workers := map[string]bool{me: true}
	// A live replica that joined lately counts for the share before it holds anything, so that
	// replicas started together split the shards at once instead of by claims. Later only replicas
	// holding or claiming leases count: one that beats but cannot take (its scans or listings
	// fail) must not keep shards unread.
	c.mu.Lock()
	for w, e := range c.roster {
		if e.beatingAt(now, c.cfg.LeaseDuration) && now.Sub(e.joined) < 2*c.cfg.LeaseDuration {
			workers[w] = true
		}
	}
	c.mu.Unlock()
	// Leases the table already names this worker for (handed over to it, or taken by a write whose
	// answer was lost) are taken whatever the share: nobody else reads them until they expire.
	var ours []string
	for _, id := range leasable {
		it, exists := byShard[id]
		switch {
		case heldSet[id]:
		case exists && it.owner == me:
			ours = append(ours, id)
		case !exists || it.owner == "" || !c.alive(it, now):
			p.take = append(p.take, id)
		default:
			workers[it.owner] = true
			if claimant := c.liveClaimant(it, now); claimant != "" && claimant != it.owner {
				workers[claimant] = true
				if claimant != me {
					p.load[claimant]++
				}
				continue
			}
			p.load[it.owner]++
			p.owned[it.owner] = append(p.owned[it.owner], id)
		}
	}
	for id := range byShard {
		if claimant := c.liveClaimant(byShard[id], now); claimant != "" {
			workers[claimant] = true
		}
	}
	p.target = (len(leasable) + len(workers) - 1) / len(workers)
	p.mine = held + pending + len(ours)
	rand.Shuffle(len(p.take), func(i, j int) { p.take[i], p.take[j] = p.take[j], p.take[i] })
	if room := max(p.target-p.mine, 0); len(p.take) > room {
		p.take = p.take[:room]
	}
	p.take = append(ours, p.take...)
	p.mine -= len(ours) // counted again by claim, with the rest of p.take
	return p
}

// take takes the planned leases, each with a conditional write, and starts their delivery. It
// reports whether it wrote any.
func (c *Coordinator) take(ctx context.Context, shards []string, byShard map[string]item, acquired func(*Lease)) bool {
	leases := make([]*Lease, len(shards))
	parallel(len(shards), func(i int) {
		leases[i] = c.takeOne(ctx, shards[i], byShard)
	})
	wrote := false
	for _, l := range leases {
		wrote = wrote || l != nil
		if l != nil && c.taking() {
			acquired(l)
		} else if l != nil {
			// Close began while the pass ran: give the lease straight back.
			if err := l.Release(ctx, ""); err != nil {
				l.log.Debugf("Could not release a lease taken as Close began: %v", err)
			}
		}
	}
	return wrote
}

// takeOne takes a lease if nobody changed it since the scan.
func (c *Coordinator) takeOne(ctx context.Context, shardID string, byShard map[string]item) *Lease {
	it, exists := byShard[shardID]
	u := update{
		set:    "#owner = :me, #timeout = :timeout, #counter = if_not_exists(#counter, :zero) + :one",
		remove: "#claim",
		names:  names(),
		values: map[string]dtypes.AttributeValue{
			":me": str(c.cfg.WorkerID), ":timeout": str(c.leaseTimeout()), ":zero": num(0), ":one": num(1),
		},
	}
	parents := c.parentsOf(shardID)
	if len(parents) > 0 {
		u.set += ", #parent = :parent"
		u.values[":parent"] = str(parents[0])
	}
	switch {
	case !exists:
		u.condition = "attribute_not_exists(#id)"
	default:
		if it.owner == "" {
			u.condition = "attribute_not_exists(#owner)"
		} else {
			u.condition = "#owner = :old"
			u.values[":old"] = str(it.owner)
		}
		switch {
		case it.hasCounter:
			u.condition += " AND #counter = :seen"
			u.values[":seen"] = num(it.counter)
		case it.timeout != "":
			u.condition += " AND attribute_not_exists(#counter) AND #timeout = :seenTimeout"
			u.values[":seenTimeout"] = str(it.timeout)
		default:
			u.condition += " AND attribute_not_exists(#counter) AND attribute_not_exists(#timeout)"
		}
	}
	log := c.log.WithFields(map[string]any{"shardId": shardID})
	got, err := c.table.update(ctx, shardID, "taking the lease", u)
	if err != nil {
		if !errors.Is(err, errConditionFailed) && ctx.Err() == nil {
			log.Warnf("Could not take the lease: %v", err)
			c.mu.Lock()
			c.scanDue = true // the write may have gone through: the table would name this worker
			c.mu.Unlock()
		}
		return nil
	}
	l := &Lease{
		c:       c,
		log:     log,
		lost:    make(chan struct{}),
		handoff: make(chan struct{}),
		counter: got.counter,
		renewed: time.Now(),
		shard: Shard{
			ID:               shardID,
			Parents:          parents,
			Checkpoint:       got.checkpoint,
			ContinuesLineage: got.checkpoint == "" && c.anyParentRead(parents, byShard),
		},
	}
	c.mu.Lock()
	c.held[shardID] = l
	delete(c.claims, shardID)
	c.mu.Unlock()
	from := "checkpoint " + got.checkpoint
	if got.checkpoint == "" {
		from = "no checkpoint"
	}
	if it.owner != "" && it.owner != c.cfg.WorkerID {
		log.Infof("Took over the lease from %s, not seen alive for %v (%s)", it.owner, c.cfg.LeaseDuration, from)
	} else {
		log.Debugf("Took the lease (%s)", from)
	}
	return l
}

// anyParentRead reports whether this application read a parent of the shard: its lease has a
// checkpoint.
func (c *Coordinator) anyParentRead(parents []string, byShard map[string]item) bool {
	for _, p := range parents {
		if byShard[p].checkpoint != "" {
			return true
		}
	}
	return false
}

// claim asks the most loaded workers to hand over as many leases as this worker lacks. It reports
// whether it placed any claim.
func (c *Coordinator) claim(ctx context.Context, p passPlan) bool {
	mine := p.mine + len(p.take)
	var picks []string
	owners := map[string]string{}
	for mine < p.target {
		victim, most := "", 0
		for w, n := range p.load {
			if n > most && len(p.owned[w]) > 0 {
				victim, most = w, n
			}
		}
		// Only from a worker above its share that would still hold no less than this one: a claim
		// never turns one imbalance into the opposite one.
		if victim == "" || most <= p.target && most <= mine+1 {
			break
		}
		owned := p.owned[victim]
		i := rand.IntN(len(owned))
		picks = append(picks, owned[i])
		owners[owned[i]] = victim
		p.owned[victim] = append(owned[:i], owned[i+1:]...)
		p.load[victim]--
		mine++
	}
	var placed atomic.Bool
	parallel(len(picks), func(i int) {
		if c.claimOne(ctx, picks[i], owners[picks[i]]) {
			placed.Store(true)
		}
	})
	return placed.Load()
}

func (c *Coordinator) claimOne(ctx context.Context, shardID, owner string) bool {
	_, err := c.table.update(ctx, shardID, "claiming the lease", update{
		set:       "#claim = :me",
		condition: "#owner = :owner AND attribute_not_exists(#claim)",
		names:     names(),
		values:    map[string]dtypes.AttributeValue{":me": str(c.cfg.WorkerID), ":owner": str(owner)},
	})
	log := c.log.WithFields(map[string]any{"shardId": shardID})
	switch {
	case err == nil:
		c.mu.Lock()
		c.claims[shardID] = time.Now()
		c.mu.Unlock()
		log.Debugf("Claimed the lease from %s", owner)
	case !errors.Is(err, errConditionFailed) && ctx.Err() == nil:
		log.Warnf("Could not claim the lease: %v", err)
	}
	return err == nil
}

// withdrawStale withdraws this worker's claims that were not honoured within the lease duration. It
// reports whether it withdrew any.
func (c *Coordinator) withdrawStale(ctx context.Context, now time.Time) bool {
	c.mu.Lock()
	var stale []string
	for id, at := range c.claims {
		if now.Sub(at) >= c.cfg.LeaseDuration {
			stale = append(stale, id)
			delete(c.claims, id)
		}
	}
	c.mu.Unlock()
	parallel(len(stale), func(i int) {
		if err := c.withdraw(ctx, stale[i]); err != nil && ctx.Err() == nil {
			c.log.Debugf("%v", err)
		}
	})
	return len(stale) > 0
}

func (c *Coordinator) withdraw(ctx context.Context, shardID string) error {
	_, err := c.table.update(ctx, shardID, "withdrawing the claim", update{
		remove:    "#claim",
		condition: "#claim = :me",
		names:     names(),
		values:    map[string]dtypes.AttributeValue{":me": str(c.cfg.WorkerID)},
	})
	if !errors.Is(err, errConditionFailed) {
		return err
	}
	// Overtaken, or honoured meanwhile: then the table names this worker, which withdraws because
	// it is closing or gave up waiting, and will not read the shard. Give the lease back so that the
	// next pass of any worker takes it, instead of it idling until it expires.
	c.mu.Lock()
	_, held := c.held[shardID]
	c.mu.Unlock()
	if held {
		return nil
	}
	_, err = c.table.update(ctx, shardID, "giving back a lease handed over as its claim was withdrawn", update{
		set:       "#counter = if_not_exists(#counter, :zero) + :one",
		remove:    "#owner",
		condition: "#owner = :me",
		names:     names(),
		values:    map[string]dtypes.AttributeValue{":me": str(c.cfg.WorkerID), ":zero": num(0), ":one": num(1)},
	})
	if err == nil {
		c.log.WithFields(map[string]any{"shardId": shardID}).Debugf("Gave back a lease handed over as its claim was withdrawn")
	}
	if errors.Is(err, errConditionFailed) {
		return nil // overtaken: another worker has it
	}
	return err
}

// renewals renews every held lease every LeaseDuration/3 until ctx ends (ProtocolRenewal).
func (c *Coordinator) renewals(ctx context.Context) {
	every := c.cfg.LeaseDuration / 3
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		held := c.Held()
		parallel(len(held), func(i int) { c.renewOne(ctx, held[i]) })
	}
}

func (c *Coordinator) renewOne(ctx context.Context, l *Lease) {
	err := l.renew(ctx)
	if err == nil || errors.Is(err, ErrLeaseLost) || ctx.Err() != nil {
		return
	}
	l.mu.Lock()
	since := time.Since(l.renewed)
	l.mu.Unlock()
	// Others judge the lease dead LeaseDuration after they saw its last renewal; stop well before.
	if since >= 2*c.cfg.LeaseDuration/3 {
		l.markLost(fmt.Sprintf("not renewed for %v: %v", since.Round(time.Millisecond), err))
		return
	}
	l.log.Warnf("Lease renewal failed, trying again: %v", err)
}

// parallel runs f(0..n-1) with at most writeParallelism at once.
func parallel(n int, f func(i int)) {
	if n == 0 {
		return
	}
	sem := make(chan struct{}, writeParallelism)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}

// finished reports whether the lease marks its shard read to its end.
func finished(it item) bool { return it.checkpoint == position.ShardEnd }
