package engine_test

// A small in-test driver: several engine.Nodes against one memstore, in virtual time,
// in one goroutine. Requests reach the store and replies reach the node after a fixed
// latency; a node is woken at the time of its last WakeAt. The driver checks, after
// every step, that at most one node believes it is coordinator and that no partition is
// processed by two nodes at once. The simulator (package sim) grows these ideas into
// faults and seeds; this one only has crashes (a node is no longer stepped).

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/engine/memstore"
)

const latency = 5 * time.Millisecond

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type dnode struct {
	id      string
	n       *engine.Node
	crashed bool
	stopped bool
	cut     bool // cut off from the store: its requests and their replies are lost
	// slowReplies, if set, is the latency of every reply to this node.
	slowReplies time.Duration
	wake        time.Time
	hasWake     bool
	events      []timedEvent
	// running: what the node's effects say it processes now.
	running map[engine.PartitionID]uint64

	stopErr error // Stopped.Err
}

type timedEvent struct {
	at time.Time
	engine.Event
}

type dmsg struct {
	at    time.Time
	seq   uint64
	node  int
	req   *engine.StoreRequest // arriving at the store
	reply *engine.StoreReply   // arriving at the node
}

type driver struct {
	t     *testing.T
	now   time.Time
	store *memstore.Store
	nodes []*dnode
	queue []dmsg
	seq   uint64
	steps int
	// owner: which node processes each partition, from Start/StopPartition effects.
	owner map[engine.PartitionID]int
	trace []string
	// Faults (TestDriverLossy only): each message is lost with probability loss and
	// otherwise takes 1ms..maxLatency, drawn from rng.
	rng        *rand.Rand
	loss       float64
	maxLatency time.Duration
}

// violate fails the test with what the checker found. (The bugs this checker exists
// for are planted by the mutation harness, mutants/, which runs these tests.)
func (d *driver) violate(format string, args ...any) {
	d.t.Error(fmt.Sprintf("at %v: ", d.now.Sub(t0)) + fmt.Sprintf(format, args...))
}

func newDriver(t *testing.T, n int, lists ...engine.TaskList) *driver {
	t.Helper()
	d := &driver{t: t, now: t0, owner: map[engine.PartitionID]int{}}
	d.store = memstore.New(func() time.Time { return d.now })
	for _, tl := range lists {
		if _, err := d.store.PutTaskList(context.Background(), tl); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		cfg := engine.Config{NodeID: fmt.Sprintf("n%d", i+1)}
		node, err := engine.NewNode(cfg, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		d.nodes = append(d.nodes, &dnode{id: cfg.NodeID, n: node, running: map[engine.PartitionID]uint64{}})
	}
	// Cold start: every node gets its first step at time zero.
	for i := range d.nodes {
		d.step(i, engine.Tick{})
	}
	return d
}

// delay is the latency of one message, or false if it is lost.
func (d *driver) delay() (time.Duration, bool) {
	if d.rng == nil {
		return latency, true
	}
	if d.rng.Float64() < d.loss {
		return 0, false
	}
	return time.Millisecond + time.Duration(d.rng.Int64N(int64(d.maxLatency))), true
}

func (d *driver) push(m dmsg) {
	d.seq++
	m.seq = d.seq
	i, _ := slices.BinarySearchFunc(d.queue, m, func(a, b dmsg) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return int(a.seq) - int(b.seq)
	})
	d.queue = slices.Insert(d.queue, i, m)
}

func (d *driver) step(i int, in engine.Input) {
	dn := d.nodes[i]
	if dn.crashed || dn.stopped {
		return
	}
	d.steps++
	if d.steps > 2_000_000 {
		d.t.Fatalf("driver: too many steps (a node busy-loops?)")
	}
	for _, e := range dn.n.Step(d.now, in) {
		switch e := e.(type) {
		case engine.StoreRequest:
			if !e.Deadline.After(d.now) {
				d.t.Fatalf("%s: request %d with deadline %v not after now %v", dn.id, e.ID, e.Deadline, d.now)
			}
			if lat, ok := d.delay(); ok {
				d.push(dmsg{at: d.now.Add(lat), node: i, req: &e})
			}
		case engine.WakeAt:
			if !e.At.After(d.now) {
				d.t.Fatalf("%s: WakeAt %v not after now %v", dn.id, e.At.Sub(t0), d.now.Sub(t0))
			}
			dn.wake, dn.hasWake = e.At, true
		case engine.StartPartition:
			if o, ok := d.owner[e.Partition]; ok && o != i {
				d.violate("%s starts %s while %s processes it", dn.id, e.Partition, d.nodes[o].id)
			}
			d.owner[e.Partition] = i
			dn.running[e.Partition] = e.Generation
			d.trace = append(d.trace, fmt.Sprintf("%v %s start %s g%d", d.now.Sub(t0), dn.id, e.Partition, e.Generation))
		case engine.StopPartition:
			if d.owner[e.Partition] == i {
				delete(d.owner, e.Partition)
			}
			delete(dn.running, e.Partition)
			d.trace = append(d.trace, fmt.Sprintf("%v %s stop %s g%d %v", d.now.Sub(t0), dn.id, e.Partition, e.Generation, e.Reason))
		case engine.Stopped:
			dn.stopped = true
			dn.stopErr = e.Err
			dn.hasWake = false
		case engine.Event:
			dn.events = append(dn.events, timedEvent{d.now, e})
			d.trace = append(d.trace, fmt.Sprintf("%v %s %s %s", d.now.Sub(t0), dn.id, e.Kind, e.Detail))
		}
	}
	d.checkBeliefs()
}

// checkBeliefs: S1 and S3 as the simulator's checker states them, on the nodes' own
// beliefs (a crashed node believes nothing).
func (d *driver) checkBeliefs() {
	coords := 0
	proc := map[engine.PartitionID]string{}
	for _, dn := range d.nodes {
		if dn.crashed {
			continue
		}
		s := dn.n.State()
		if s.Coordinator && d.now.Before(s.LeaseUntil) {
			coords++
		}
		if d.now.Before(s.LivenessUntil) {
			for _, o := range s.Owned {
				if other, dup := proc[o.Partition]; dup {
					d.violate("%s processed by %s and %s", o.Partition, other, dn.id)
				}
				proc[o.Partition] = dn.id
			}
		}
	}
	if coords > 1 {
		d.violate("%d nodes believe they are coordinator", coords)
	}
}

// next performs the earliest pending thing (a message or a wake-up) if it is due by end;
// it reports false when nothing is.
func (d *driver) next(end time.Time) bool {
	wi := -1
	for i, dn := range d.nodes {
		if dn.hasWake && !dn.crashed && !dn.stopped && (wi < 0 || dn.wake.Before(d.nodes[wi].wake)) {
			wi = i
		}
	}
	var at time.Time
	msg := len(d.queue) > 0
	switch {
	case msg && (wi < 0 || !d.nodes[wi].wake.Before(d.queue[0].at)):
		at = d.queue[0].at
	case wi >= 0:
		at, msg = d.nodes[wi].wake, false
	default:
		return false
	}
	if at.After(end) {
		return false
	}
	d.now = at
	if !msg {
		d.nodes[wi].hasWake = false
		d.step(wi, engine.Tick{})
		return true
	}
	m := d.queue[0]
	d.queue = d.queue[1:]
	dn := d.nodes[m.node]
	if dn.cut {
		return true // lost on the way
	}
	if m.req != nil {
		// The store performs the call when it arrives, even if the caller has crashed
		// meanwhile; the reply travels back unless the caller is gone.
		ctx := context.Background()
		v, err := m.req.Op.Do(ctx, d.store)
		lat, ok := d.delay()
		if !ok {
			return true // the write (if any) happened; the caller never learns
		}
		if dn.slowReplies > 0 {
			lat = dn.slowReplies
		}
		if err == nil {
			d.push(dmsg{at: d.now.Add(lat), node: m.node, reply: &engine.StoreReply{ID: m.req.ID, Value: v}})
		} else {
			d.push(dmsg{at: d.now.Add(lat), node: m.node, reply: &engine.StoreReply{ID: m.req.ID, Err: err}})
		}
		return true
	}
	if !dn.crashed && !dn.stopped {
		d.step(m.node, *m.reply)
	}
	return true
}

// run advances virtual time to end.
func (d *driver) run(end time.Time) {
	for d.next(end) {
	}
	d.now = end
}

// runFor advances virtual time by dur.
func (d *driver) runFor(dur time.Duration) { d.run(d.now.Add(dur)) }

// until advances until cond holds (checked after every step) or limit passes; it
// returns the time cond first held and whether it did.
func (d *driver) until(limit time.Duration, cond func() bool) (time.Time, bool) {
	end := d.now.Add(limit)
	for !cond() {
		if !d.next(end) {
			d.now = end
			return end, cond()
		}
	}
	return d.now, true
}

func (d *driver) crash(i int) {
	dn := d.nodes[i]
	dn.crashed = true
	// The process is gone, and with it its processing.
	for p := range dn.running {
		if d.owner[p] == i {
			delete(d.owner, p)
		}
	}
	dn.running = map[engine.PartitionID]uint64{}
}

// restart replaces a crashed node by a fresh one with the same id (memory lost).
func (d *driver) restart(i int, seed uint64) {
	dn := d.nodes[i]
	cfg := engine.Config{NodeID: dn.id}
	n, err := engine.NewNode(cfg, seed)
	if err != nil {
		d.t.Fatal(err)
	}
	d.nodes[i] = &dnode{id: dn.id, n: n, running: map[engine.PartitionID]uint64{}}
	d.step(i, engine.Tick{})
}

func (d *driver) coordinator() int {
	for i, dn := range d.nodes {
		if dn.crashed || dn.stopped {
			continue
		}
		if s := dn.n.State(); s.Coordinator && d.now.Before(s.LeaseUntil) {
			return i
		}
	}
	return -1
}

func (d *driver) countCoordinators() int {
	c := 0
	for _, dn := range d.nodes {
		if s := dn.n.State(); !dn.crashed && s.Coordinator && d.now.Before(s.LeaseUntil) {
			c++
		}
	}
	return c
}

// converged: every configured partition processed by exactly one live node, and the
// store's rows all Assigned to those nodes.
func (d *driver) converged(total int) bool {
	if len(d.owner) != total {
		return false
	}
	for _, r := range d.store.Snapshot().Assignments {
		if r.State == engine.Deleted {
			continue
		}
		if r.State != engine.Assigned {
			return false
		}
	}
	return true
}

func (d *driver) counts() map[string]int {
	c := map[string]int{}
	for _, dn := range d.nodes {
		if !dn.crashed && !dn.stopped {
			c[dn.id] = len(dn.running)
		}
	}
	return c
}

func (d *driver) firstEvent(i int, kind string, after time.Time) (time.Time, bool) {
	for _, e := range d.nodes[i].events {
		if e.Kind == kind && !e.at.Before(after) {
			return e.at, true
		}
	}
	return time.Time{}, false
}

var tl20 = engine.TaskList{Domain: "d", Name: "orders", Partitions: 20}

func defaults() engine.Config { return engine.Config{}.WithDefaults() }

func maxRetry() time.Duration {
	c := defaults()
	return time.Duration(float64(c.RetryPeriod) * (1 + c.RetryJitter))
}

func TestDriverColdStartElection(t *testing.T) {
	d := newDriver(t, 5, tl20)
	at, ok := d.until(10*time.Second, func() bool { return d.coordinator() >= 0 })
	if !ok {
		t.Fatal("no coordinator elected within 10s")
	}
	elected := at.Sub(t0)
	t.Logf("cold start: coordinator %s elected after %v (bound: one retry period, %v)", d.nodes[d.coordinator()].id, elected, defaults().RetryPeriod)
	if elected > defaults().RetryPeriod {
		t.Errorf("election took %v, more than one retry period", elected)
	}
	conv, ok := d.until(30*time.Second, func() bool { return d.converged(20) })
	if !ok {
		t.Fatalf("not converged after 30s: %v", d.counts())
	}
	t.Logf("cold start: all 20 partitions running after %v: %v", conv.Sub(t0), d.counts())
	for id, c := range d.counts() {
		if c != 4 {
			t.Errorf("%s runs %d partitions, want 4 (balanced)", id, c)
		}
	}
	d.runFor(20 * time.Second)
	if c := d.countCoordinators(); c != 1 {
		t.Errorf("%d coordinators after 20s more, want 1", c)
	}
}

func TestDriverCoordinatorCrash(t *testing.T) {
	d := newDriver(t, 5, tl20)
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
		t.Fatal("not converged")
	}
	d.runFor(5 * time.Second)
	old := d.coordinator()
	crashAt := d.now
	d.crash(old)
	var next int
	at, ok := d.until(30*time.Second, func() bool {
		for i := range d.nodes {
			if i == old {
				continue
			}
			if _, ok := d.firstEvent(i, "became_coordinator", crashAt); ok {
				next = i
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatal("no new coordinator within 30s of the crash")
	}
	took := at.Sub(crashAt)
	bound := defaults().LeaseTTL + maxRetry()
	t.Logf("coordinator %s crashed at %v; %s became coordinator %v later (bound ttl + one retry = %v)", d.nodes[old].id, crashAt.Sub(t0), d.nodes[next].id, took, bound)
	if took > bound {
		t.Errorf("takeover took %v > %v", took, bound)
	}
	// It acts: reads, declares the old node dead and moves its partitions.
	if _, ok := d.until(30*time.Second, func() bool {
		_, ok := d.firstEvent(next, "applied", crashAt)
		return ok && d.converged(20)
	}); !ok {
		t.Fatalf("new coordinator did not restore the assignment: %v", d.counts())
	}
	t.Logf("all partitions running again %v after the crash: %v", d.now.Sub(crashAt), d.counts())
}

// TestDriverWorkerCrash crashes a worker at ten phases of its heartbeat cycle; the
// worst case is a crash just after a heartbeat.
func TestDriverWorkerCrash(t *testing.T) {
	c := defaults()
	bound := c.DeadAfter + 2*c.Tick
	var worst time.Duration
	for off := time.Duration(0); off < time.Second; off += 100 * time.Millisecond {
		d := newDriver(t, 5, tl20)
		if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
			t.Fatal("not converged")
		}
		d.run(t0.Add(5*time.Second + off))
		victim := (d.coordinator() + 1) % len(d.nodes)
		lost := slices.Collect(maps.Keys(d.nodes[victim].running))
		if len(lost) == 0 {
			t.Fatalf("victim %s runs nothing", d.nodes[victim].id)
		}
		crashAt := d.now
		d.crash(victim)
		at, ok := d.until(30*time.Second, func() bool {
			for _, p := range lost {
				if _, ok := d.owner[p]; !ok {
					return false
				}
			}
			return true
		})
		if !ok {
			t.Fatalf("partitions of the crashed worker not running elsewhere after 30s")
		}
		took := at.Sub(crashAt)
		worst = max(worst, took)
		t.Logf("worker %s crashed at %v with %d partitions; all running elsewhere %v later", d.nodes[victim].id, crashAt.Sub(t0), len(lost), took)
		if took > bound {
			t.Errorf("failover took %v > dead_after + 2 ticks = %v", took, bound)
		}
		if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
			t.Fatal("not converged after the crash")
		}
		for id, n := range d.counts() {
			if n != 5 {
				t.Errorf("%s runs %d, want 5 after rebalancing over 4 nodes", id, n)
			}
		}
	}
	t.Logf("worker crash: worst failover %v (bound dead_after + 2 ticks = %v)", worst, bound)
}

// TestDriverResize shrinks and grows a task list: partitions beyond the new count are
// released, stopped and tombstoned; new ones are assigned; generations keep growing.
func TestDriverResize(t *testing.T) {
	d := newDriver(t, 5, tl20)
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
		t.Fatal("not converged")
	}
	ctx := context.Background()
	if _, err := d.store.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "orders", Partitions: 8}); err != nil {
		t.Fatal(err)
	}
	start := d.now
	at, ok := d.until(30*time.Second, func() bool { return d.converged(8) })
	if !ok {
		t.Fatalf("not converged after shrinking: %v", d.counts())
	}
	t.Logf("shrink 20 → 8 partitions converged in %v: %v", at.Sub(start), d.counts())
	gens := map[engine.PartitionID]uint64{}
	for _, r := range d.store.Snapshot().Assignments {
		if r.Partition.Partition >= 8 && r.State != engine.Deleted {
			t.Errorf("row %s is %s, want deleted", r.Partition, r.State)
		}
		gens[r.Partition] = r.Generation
	}
	for p := range d.owner {
		if p.Partition >= 8 {
			t.Errorf("%s still processed", p)
		}
	}
	if _, err := d.store.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "orders", Partitions: 12}); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(12) }); !ok {
		t.Fatalf("not converged after growing: %v", d.counts())
	}
	for _, r := range d.store.Snapshot().Assignments {
		if r.Partition.Partition < 12 && r.Partition.Partition >= 8 && r.Generation <= gens[r.Partition] {
			t.Errorf("%s came back at generation %d, not above %d", r.Partition, r.Generation, gens[r.Partition])
		}
	}
	// A task list deleted altogether.
	if _, err := d.store.DeleteTaskList(ctx, "d", "orders"); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(0) }); !ok {
		t.Fatalf("still processing after delete: %v", d.counts())
	}
}

func TestDriverDrain(t *testing.T) {
	d := newDriver(t, 5, tl20)
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
		t.Fatal("not converged")
	}
	victim := (d.coordinator() + 2) % len(d.nodes)
	start := d.now
	d.step(victim, engine.Drain{})
	at, ok := d.until(60*time.Second, func() bool { return d.nodes[victim].n.State().Drained && d.converged(20) })
	if !ok {
		t.Fatalf("not drained after 60s: %+v", d.nodes[victim].n.State())
	}
	t.Logf("%s drained in %v: %v", d.nodes[victim].id, at.Sub(start), d.counts())
	if n := len(d.nodes[victim].running); n != 0 {
		t.Errorf("drained node still runs %d partitions", n)
	}
	if s := d.nodes[victim].n.State(); len(s.Owned) != 0 || !s.Draining {
		t.Errorf("drained node state: %+v", s)
	}
	// Every stop on the drained node was a release (handoff), not a fence or revocation.
	for _, line := range d.trace {
		if strings.Contains(line, " "+d.nodes[victim].id+" stop ") && !strings.HasSuffix(line, "released") {
			t.Errorf("unexpected stop: %s", line)
		}
	}
	// Graceful handoff keeps each partition unprocessed for at most about a heartbeat:
	// its new owner heartbeats fast while the partition is on its way to it.
	gaps, missing := handoffGaps(d, d.nodes[victim].id, start)
	if len(missing) > 0 {
		t.Errorf("released on %s but never started elsewhere: %v", d.nodes[victim].id, missing)
	}
	checkGaps(t, "drain", gaps, time.Second)
	// It stays drained: nothing comes back.
	d.runFor(20 * time.Second)
	if n := len(d.nodes[victim].running); n != 0 {
		t.Errorf("drained node got %d partitions back", n)
	}
	// Undrain: it gets its share again only when the allocator moves some back; with a
	// sticky allocator it at least becomes eligible (not asserted: placement policy).
}

// handoffGaps measures, in virtual time, how long each partition released by node from
// (any node if from is empty) after since went unprocessed: from its stop (reason
// released) to its next start on another node. Releases never followed by a start are
// returned in missing.
func handoffGaps(d *driver, from string, since time.Time) (gaps []time.Duration, missing []string) {
	type stop struct {
		at   time.Duration
		node string
	}
	open := map[string]stop{} // partition → its pending release
	for _, line := range d.trace {
		// "<offset> <node> start <partition> g<gen>" / "<offset> <node> stop <partition> g<gen> <reason>"
		f := strings.Fields(line)
		if len(f) < 5 || (f[2] != "start" && f[2] != "stop") {
			continue
		}
		at, err := time.ParseDuration(f[0])
		if err != nil {
			d.t.Fatalf("trace line %q: %v", line, err)
		}
		if t0.Add(at).Before(since) {
			continue
		}
		node, p := f[1], f[3]
		switch {
		case f[2] == "stop" && len(f) == 6 && f[5] == engine.StopReleased.String() && (from == "" || node == from):
			open[p] = stop{at, node}
		case f[2] == "start":
			if s, ok := open[p]; ok && s.node != node {
				gaps = append(gaps, at-s.at)
				delete(open, p)
			}
		}
	}
	for _, p := range slices.Sorted(maps.Keys(open)) {
		missing = append(missing, p)
	}
	return gaps, missing
}

// quantile is the q-quantile (nearest rank) of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// checkGaps logs the p50/p99/max of handoff gaps and fails if the p99 exceeds bound.
func checkGaps(t *testing.T, what string, gaps []time.Duration, bound time.Duration) {
	t.Helper()
	if len(gaps) == 0 {
		t.Errorf("%s: no handoff measured", what)
		return
	}
	g := slices.Sorted(slices.Values(gaps))
	p50, p99 := quantile(g, 0.50), quantile(g, 0.99)
	t.Logf("%s: %d handoffs, partition unprocessed p50 %v, p99 %v, max %v", what, len(g), p50, p99, g[len(g)-1])
	if p99 > bound {
		t.Errorf("%s: handoff gap p99 %v exceeds %v (gaps %v)", what, p99, bound, g)
	}
}

// TestDriverHandoffGap measures graceful handoffs with default timings on a cluster whose
// heartbeats are not in phase (nodes start at seeded random offsets within a heartbeat,
// as real processes do): every node in turn is drained, then undrained and given its
// share back, and every release is timed from the old owner's stop to the new owner's
// start. The new owner learns from its heartbeat that a partition is coming and
// heartbeats at Heartbeat/5 until it arrives, so the gap is at most about one heartbeat
// interval even in the worst phase, and usually a fraction of one.
func TestDriverHandoffGap(t *testing.T) {
	tl := engine.TaskList{Domain: "d", Name: "gaps", Partitions: 60}
	d := newDriver(t, 0, tl)
	rng := rand.New(rand.NewPCG(42, 7))
	for i := range 5 {
		cfg := engine.Config{NodeID: fmt.Sprintf("n%d", i+1)}
		node, err := engine.NewNode(cfg, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		d.runFor(time.Duration(rng.Int64N(int64(defaults().Heartbeat))))
		d.nodes = append(d.nodes, &dnode{id: cfg.NodeID, n: node, running: map[engine.PartitionID]uint64{}})
		d.step(i, engine.Tick{})
	}
	balanced := func() bool {
		for _, n := range d.counts() {
			if n != 12 {
				return false
			}
		}
		return true
	}
	if _, ok := d.until(60*time.Second, func() bool { return d.converged(60) && balanced() }); !ok {
		t.Fatalf("not converged: %v", d.counts())
	}
	start := d.now
	for i := range d.nodes {
		d.step(i, engine.Drain{})
		if _, ok := d.until(60*time.Second, func() bool { return d.nodes[i].n.State().Drained && d.converged(60) }); !ok {
			t.Fatalf("%s not drained: %v", d.nodes[i].id, d.counts())
		}
		d.step(i, engine.Drain{Undrain: true})
		if _, ok := d.until(60*time.Second, func() bool { return d.converged(60) && balanced() }); !ok {
			t.Fatalf("%s did not get its share back: %v", d.nodes[i].id, d.counts())
		}
		// Let the phases drift apart again.
		d.runFor(time.Duration(rng.Int64N(int64(defaults().Heartbeat))))
	}
	gaps, missing := handoffGaps(d, "", start)
	if len(missing) > 0 {
		t.Errorf("released but never started elsewhere: %v", missing)
	}
	if len(gaps) < 100 {
		t.Errorf("only %d handoffs measured", len(gaps))
	}
	// The target is each partition unprocessed ≤ 1s with default timings. The parts: the
	// old owner's ack (latency), the coordinator seeing it (it reads every Tick/5 while
	// handoffs are pending, from the read right after its release batch), and the new owner
	// learning of it (it heartbeats every Heartbeat/5 while a partition is coming). Without
	// the worker's fast rhythm this p99 was 1.59s; without the coordinator's, 1.17s.
	c := defaults()
	checkGaps(t, "drain and undrain of each of 5 nodes, 60 partitions", gaps, c.Tick)
}

func TestDriverSteadyStateWrites(t *testing.T) {
	d := newDriver(t, 5, tl20)
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
		t.Fatal("not converged")
	}
	d.runFor(10 * time.Second)
	before := d.store.Stats()
	const window = 60 * time.Second
	d.runFor(window)
	after := d.store.Stats()
	grew := map[string]int{}
	for k, v := range after {
		if v != before[k] {
			grew[k] = v - before[k]
		}
	}
	t.Logf("steady state, %v, 5 nodes: writes %v (%.2f per node per second)", window, grew,
		float64(grew["heartbeat"]+grew["renew"])/window.Seconds()/5)
	for k := range grew {
		if k != "heartbeat" && k != "renew" {
			t.Errorf("steady state wrote %q %d times", k, grew[k])
		}
	}
	c := defaults()
	wantHB := int(window/c.Heartbeat) * 5
	if h := grew["heartbeat"]; h < wantHB-5 || h > wantHB+5 {
		t.Errorf("heartbeats: %d, want about %d", h, wantHB)
	}
	wantRenew := int(window / c.RenewInterval)
	if r := grew["renew"]; r < wantRenew-1 || r > wantRenew+1 {
		t.Errorf("renewals: %d, want about %d", r, wantRenew)
	}
}

func TestDriverGracefulShutdown(t *testing.T) {
	d := newDriver(t, 5, tl20)
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
		t.Fatal("not converged")
	}
	for round, pick := range []string{"worker", "coordinator"} {
		coord := d.coordinator()
		victim := coord
		if pick == "worker" {
			victim = (coord + 3) % len(d.nodes)
		}
		id := d.nodes[victim].id
		held := len(d.nodes[victim].running)
		start := d.now
		d.step(victim, engine.Shutdown{})
		at, ok := d.until(60*time.Second, func() bool { return d.nodes[victim].stopped })
		if !ok {
			t.Fatalf("%s %s did not stop within 60s", pick, id)
		}
		t.Logf("shutdown of %s %s (held %d): Stopped after %v", pick, id, held, at.Sub(start))
		if _, ok := d.firstEvent(victim, "drained", start); !ok {
			t.Errorf("%s stopped without draining first (bounded wait hit?)", id)
		}
		snap := d.store.Snapshot()
		for _, n := range snap.Nodes {
			if n.ID == id && n.Status != engine.NodeDead {
				t.Errorf("%s still registered alive after shutdown", id)
			}
		}
		if pick == "coordinator" {
			for _, l := range snap.Leases {
				if l.Owner == id && l.HeldAt(snap.Now) {
					t.Errorf("lease still held by the stopped coordinator")
				}
			}
			nat, ok := d.until(10*time.Second, func() bool { return d.coordinator() >= 0 })
			if !ok {
				t.Fatal("no coordinator after the coordinator's shutdown")
			}
			// A standby that last saw the lease held polls again at its expiry, at most
			// LeaseTTL/2 (+1ms + jitter) later (coordinator.go, heldPollDelay): it does not
			// learn of the release before that poll, so that is the bound, not one retry.
			// (It held by luck at one retry while the drain took exactly 2s; a faster
			// drain moves the release earlier in the standbys' poll cycle.)
			c := defaults()
			heldPoll := c.LeaseTTL/2 + time.Millisecond + time.Duration(c.RetryJitter*float64(c.RetryPeriod)/4)
			t.Logf("a new coordinator took over %v after the old one stopped (released lease: bound one held-lease poll, %v)", nat.Sub(at), heldPoll)
			if nat.Sub(at) > max(maxRetry(), heldPoll)+2*latency {
				t.Errorf("takeover after a released lease took %v", nat.Sub(at))
			}
		}
		if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
			t.Fatalf("round %d: not converged after shutdown: %v", round, d.counts())
		}
	}
	// Graceful: no partition was ever stopped by a fence, a death or a shutdown timeout.
	for _, line := range d.trace {
		if strings.Contains(line, " stop ") && (strings.HasSuffix(line, "self-fenced") || strings.HasSuffix(line, "node-dead") || strings.HasSuffix(line, "shutdown")) {
			t.Errorf("not graceful: %s", line)
		}
	}
	t.Logf("after two graceful shutdowns: %v", d.counts())
}

// TestDriverDeterministic: the same cluster run twice gives the same trace.
func TestDriverDeterministic(t *testing.T) {
	run := func() []string {
		d := newDriver(t, 5, tl20)
		d.runFor(15 * time.Second)
		d.crash(2)
		d.runFor(15 * time.Second)
		return d.trace
	}
	a, b := run(), run()
	if !slices.Equal(a, b) {
		t.Fatalf("two runs differ (%d vs %d lines)", len(a), len(b))
	}
	if len(a) == 0 {
		t.Fatal("empty trace")
	}
}

// TestDriverCutOff cuts a worker, then the coordinator, off from the store (the node
// keeps running and stepping, only its messages are lost). The checker on the nodes'
// beliefs (after every step) asserts that the worker stopped its partitions before they
// started elsewhere and that the old coordinator stopped believing before another began.
func TestDriverCutOff(t *testing.T) {
	d := newDriver(t, 5, tl20)
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
		t.Fatal("not converged")
	}
	d.runFor(3 * time.Second)
	coord := d.coordinator()
	victim := (coord + 1) % len(d.nodes)
	w := d.nodes[victim]
	lost := slices.Collect(maps.Keys(w.running))
	cutAt := d.now
	w.cut = true
	fencedAt, ok := d.until(20*time.Second, func() bool { return len(w.running) == 0 })
	if !ok {
		t.Fatal("cut-off worker never stopped its partitions")
	}
	movedAt, ok := d.until(20*time.Second, func() bool {
		for _, p := range lost {
			if o, ok := d.owner[p]; !ok || o == victim {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatal("partitions of the cut-off worker never moved")
	}
	t.Logf("worker %s cut off at %v: self-fenced %v later, its partitions running elsewhere %v later", w.id, cutAt.Sub(t0), fencedAt.Sub(cutAt), movedAt.Sub(cutAt))
	if _, ok := d.firstEvent(victim, "self_fenced", cutAt); !ok {
		t.Error("no self_fenced event")
	}
	// Heal: the worker learns it was declared dead, registers again and gets a share.
	w.cut = false
	healAt := d.now
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) && len(w.running) > 0 }); !ok {
		t.Fatalf("healed worker never came back: %v", d.counts())
	}
	if _, ok := d.firstEvent(victim, "node_dead", healAt); !ok {
		t.Error("healed worker was not told it was dead")
	}
	if w.n.State().Incarnation < 2 {
		t.Errorf("incarnation %d after re-registration", w.n.State().Incarnation)
	}
	// Now the coordinator.
	d.runFor(10 * time.Second)
	coord = d.coordinator()
	cn := d.nodes[coord]
	cn.cut = true
	cutAt = d.now
	var next int
	at, ok := d.until(30*time.Second, func() bool {
		for i := range d.nodes {
			if _, ok := d.firstEvent(i, "became_coordinator", cutAt); ok && i != coord {
				next = i
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatal("no takeover from a cut-off coordinator")
	}
	down, _ := d.firstEvent(coord, "stepped_down", cutAt)
	t.Logf("coordinator %s cut off at %v: stepped down %v later, %s took over %v later", cn.id, cutAt.Sub(t0), down.Sub(cutAt), d.nodes[next].id, at.Sub(cutAt))
	if down.IsZero() || !down.Before(at) {
		t.Errorf("old coordinator stepped down at %v, not before the takeover at %v", down.Sub(t0), at.Sub(t0))
	}
	cn.cut = false
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
		t.Fatalf("not converged after healing: %v", d.counts())
	}
	d.runFor(10 * time.Second)
	if c := d.countCoordinators(); c != 1 {
		t.Errorf("%d coordinators after healing", c)
	}
}

// TestDriverLossy runs the cluster over a bad network (10% of messages lost, latency up
// to 400ms, so replies overtake each other and some arrive after their deadline) with
// crashes and restarts, for several seeds. The belief checker runs after every step;
// once the faults stop the cluster must converge again.
func TestDriverLossy(t *testing.T) {
	seeds := uint64(6)
	if s := os.Getenv("HELIX_DRIVER_SEEDS"); s != "" {
		seeds, _ = strconv.ParseUint(s, 10, 64) // for longer local hunts
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			d := newDriver(t, 5, tl20)
			d.rng = rand.New(rand.NewPCG(seed, 7))
			// Odd seeds: a lossy network; even seeds: a slow one, where many replies come
			// after their deadline.
			d.loss, d.maxLatency = 0.1, 400*time.Millisecond
			if seed%2 == 0 {
				d.loss, d.maxLatency = 0.3, 1200*time.Millisecond
			}
			for round := range 6 {
				d.runFor(10 * time.Second)
				victim := d.rng.IntN(len(d.nodes))
				d.crash(victim)
				d.runFor(time.Duration(d.rng.IntN(8000)) * time.Millisecond)
				d.restart(victim, seed*100+uint64(round))
			}
			d.rng = nil // faults stop
			healed := d.now
			balanced := func() bool {
				for _, n := range d.counts() {
					if n != 4 {
						return false
					}
				}
				return true
			}
			at, ok := d.until(60*time.Second, func() bool { return d.converged(20) && d.countCoordinators() == 1 && balanced() })
			if !ok {
				t.Fatalf("not converged 60s after the faults stopped: %v", d.counts())
			}
			t.Logf("seed %d: converged %v after the faults stopped: %v", seed, at.Sub(healed), d.counts())
		})
	}
}

// TestDriverSlowRepliesThenCut: replies to the coordinator take 850ms (within its 900ms
// deadline); then it is cut off. The store's lease ends 6s after the last renewal reached
// it, and a standby polls just after that: the cut-off coordinator, counting its lease
// from each renewal's send, must have given up before. (A coordinator counting from the
// reply overlaps its successor here: mutant NodeLeaseFromReply in mutants/.)
func TestDriverSlowRepliesThenCut(t *testing.T) {
	d := newDriver(t, 5, tl20)
	d.until(30*time.Second, func() bool { return d.converged(20) })
	c := d.nodes[d.coordinator()]
	c.slowReplies = 850 * time.Millisecond
	d.runFor(6 * time.Second) // just after a renewal's reply, before the next renewal
	c.cut = true
	d.runFor(15 * time.Second) // the checker fails the test on any overlap
	if d.countCoordinators() != 1 {
		t.Errorf("%d coordinators", d.countCoordinators())
	}
}

// TestDriverWorkerCut: a worker cut off from the store stops processing before its
// partitions start elsewhere (the checker fails the test on any overlap).
func TestDriverWorkerCut(t *testing.T) {
	d := newDriver(t, 5, tl20)
	d.until(30*time.Second, func() bool { return d.converged(20) })
	d.nodes[(d.coordinator()+1)%5].cut = true
	d.runFor(20 * time.Second)
	if !d.converged(20) {
		t.Errorf("not converged after the cut: %v", d.counts())
	}
}
