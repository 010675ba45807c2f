package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/helixcoord/helix/engine"
)

// The state-machine test: random interleavings of every Store operation, from three lease
// owners and three nodes over two lease keys and three task lists, run against the store
// and against model, a plain transcription of the contract. Every reply is compared
// (values and error kinds), and after every step the whole observable state is.
// Nodes register anonymously (not exclusive) or exclusively as one of three processes per
// id, with or without Replace; workers give their rows back.
//
// On a manual clock, time advances by random steps and durations are a few seconds, so
// leases expire and nodes age past dead_after; store times are compared exactly (as
// offsets from the first reply). On a real clock no time is advanced and durations are
// long, so the model's view of time (nothing expires) holds however slow the backend is.

// model is the contract as plain data. Times are offsets from the store's first reply.
type model struct {
	manual bool
	now    time.Duration
	leases map[string]*mLease
	nodes  map[string]*mNode
	tls    map[[2]string]int
	rows   map[engine.PartitionID]*engine.Assignment
	rev    uint64
	// lastDying is how many nodes the last successful apply declared dead by age.
	lastDying int
}

type mLease struct {
	owner   string
	epoch   uint64
	status  engine.LeaseStatus
	expires time.Duration
}

type mNode struct {
	inc       uint64
	alive     bool
	draining  bool
	capacity  int
	labels    []engine.Label
	lastHB    time.Duration
	assignRev uint64
	// process is the registering process (process, host, pid; empty for an anonymous
	// registration) and replaceBy the process waiting to take the id over (Replace).
	process   engine.NodeProcess
	replaceBy engine.NodeProcess
}

func (l *mLease) held(now time.Duration) bool {
	return l.status == engine.LeaseActive && now < l.expires
}

func (m *model) live(id string, inc uint64, dying map[string]bool) bool {
	n := m.nodes[id]
	return n != nil && n.inc == inc && n.alive && !dying[id]
}

func (m *model) configured(p engine.PartitionID) bool {
	n, ok := m.tls[[2]string{p.Domain, p.TaskList}]
	return ok && p.Partition < n
}

func (m *model) bump() uint64 { m.rev++; return m.rev }

// incomingTo is the node a row is on its way to: its Target while Releasing, and while
// Unassigned after a release until it is assigned or deleted ("" for nobody).
// incomingTo is the model's own statement of engine.Assignment.IncomingTo, kept separate
// so that the oracle does not share code with the stores it checks.
func incomingTo(r engine.Assignment) string {
	if r.State == engine.Releasing || r.State == engine.Unassigned {
		return r.Target
	}
	return ""
}

// incoming is the model's HeartbeatReply.Incoming for id: sorted partitions on their
// way to it.
func (m *model) incoming(id string) []engine.PartitionID {
	var out []engine.PartitionID
	for _, r := range m.sortedRows(func(r *engine.Assignment) bool { return incomingTo(*r) == id }) {
		out = append(out, r.Partition)
	}
	return out
}

func (m *model) sortedRows(keep func(*engine.Assignment) bool) []engine.Assignment {
	var out []engine.Assignment
	for _, r := range m.rows {
		if keep(r) {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b engine.Assignment) int { return engine.ComparePartitions(a.Partition, b.Partition) })
	return out
}

func (m *model) acquire(key, owner string, ttl time.Duration) (mLease, error) {
	l := m.leases[key]
	switch {
	case l == nil:
		l = &mLease{epoch: 1}
		m.leases[key] = l
	case l.held(m.now) && l.owner == owner:
	case l.held(m.now):
		return *l, engine.ErrLeaseHeld
	default:
		l.epoch++
	}
	l.owner, l.status, l.expires = owner, engine.LeaseActive, m.now+ttl
	return *l, nil
}

func (m *model) renew(key, owner string, epoch uint64, ttl time.Duration) (mLease, error) {
	l := m.leases[key]
	if l == nil || !l.held(m.now) || l.owner != owner || l.epoch != epoch {
		return mLease{}, engine.ErrLeaseLost
	}
	l.expires = m.now + ttl
	return *l, nil
}

func (m *model) release(key, owner string, epoch uint64) (mLease, error) {
	l := m.leases[key]
	if l == nil || !l.held(m.now) || l.owner != owner || l.epoch != epoch {
		return mLease{}, engine.ErrLeaseLost
	}
	l.owner, l.status, l.expires = "", engine.LeaseInactive, m.now
	return *l, nil
}

func (m *model) apply(b engine.Batch) error {
	m.lastDying = 0
	l := m.leases[b.Fence.Key]
	if l == nil || !l.held(m.now) || l.epoch != b.Fence.Epoch {
		return engine.ErrFenced
	}
	for _, c := range b.Changes {
		if r := m.rows[c.Partition]; r != nil && r.Epoch > b.Fence.Epoch {
			return engine.ErrFenced
		}
	}
	dying := map[string]bool{}
	for _, d := range b.Dead {
		n := m.nodes[d.ID]
		if n == nil || d.Incarnation > n.inc {
			return engine.ErrConflict
		}
		if d.Incarnation < n.inc || !n.alive {
			continue
		}
		if m.now-n.lastHB <= b.DeadAfter {
			return engine.ErrConflict
		}
		dying[d.ID] = true
	}
	next := make([]engine.Assignment, len(b.Changes))
	for i, c := range b.Changes {
		r := m.rows[c.Partition]
		if r == nil || r.Revision != c.Revision {
			return engine.ErrConflict
		}
		owned := r.State == engine.Assigned || r.State == engine.Releasing
		ownerLive := owned && m.live(r.Owner, r.Incarnation, dying)
		n := *r
		n.Epoch = b.Fence.Epoch
		switch c.Kind {
		case engine.ChangeAssign:
			if !(r.State == engine.Unassigned || (owned && !ownerLive)) || !m.configured(c.Partition) || !m.live(c.Owner, c.Incarnation, dying) {
				return engine.ErrConflict
			}
			n.State, n.Owner, n.Incarnation, n.Generation, n.Target = engine.Assigned, c.Owner, c.Incarnation, r.Generation+1, ""
		case engine.ChangeRelease:
			if r.State != engine.Assigned || !ownerLive {
				return engine.ErrConflict
			}
			n.State, n.Target = engine.Releasing, c.Target
		case engine.ChangeUnassign:
			if !owned || ownerLive {
				return engine.ErrConflict
			}
			n.State, n.Owner, n.Incarnation = engine.Unassigned, "", 0
		case engine.ChangeDelete:
			if r.State == engine.Deleted || ownerLive || m.configured(c.Partition) {
				return engine.ErrConflict
			}
			n.State, n.Owner, n.Incarnation, n.Target = engine.Deleted, "", 0, ""
		}
		next[i] = n
	}
	for id := range dying {
		m.nodes[id].alive = false
	}
	m.lastDying = len(dying)
	touched := map[string]bool{}
	for _, n := range next {
		old := m.rows[n.Partition]
		touched[old.Owner] = true
		touched[n.Owner] = true
		touched[incomingTo(*old)] = true
		touched[incomingTo(n)] = true
		n.Revision = m.bump()
		*old = n
	}
	for id := range touched {
		if nd := m.nodes[id]; nd != nil {
			nd.assignRev++
		}
	}
	return nil
}

// smTest is one run of the state machine.
type smTest struct {
	s            engine.Store
	c            Clock
	m            *model
	ctx          context.Context
	start        time.Time
	seen         map[string]uint64 // each node's last AssignRevision from a heartbeat
	rev          uint64            // the last store revision read
	seenOutcomes map[string]int    // op + error kind → count, across all runs
	ttls         []time.Duration
	deadAf       []time.Duration
}

var (
	smKeys   = []string{"k1", "k2"}
	smOwners = []string{"o1", "o2", "o3"}
	smNodes  = []string{"n1", "n2", "n3"}
	smTLs    = [][2]string{{"d", "a"}, {"d", "b"}, {"e", "a"}}
	smMaxP   = 4
)

func testStateMachine(t *testing.T, newStore func(t *testing.T) (engine.Store, Clock)) {
	outcomes := map[string]int{}
	manual := false
	rapid.Check(t, func(rt *rapid.T) {
		s, c := newStore(t)
		manual = c.Manual()
		st := &smTest{s: s, c: c, ctx: context.Background(), seen: map[string]uint64{}, seenOutcomes: outcomes,
			m: &model{manual: c.Manual(), leases: map[string]*mLease{}, nodes: map[string]*mNode{},
				tls: map[[2]string]int{}, rows: map[engine.PartitionID]*engine.Assignment{}}}
		if c.Manual() {
			st.ttls = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second}
			st.deadAf = []time.Duration{time.Second, 2 * time.Second}
		} else {
			st.ttls = []time.Duration{long, 2 * long}
			st.deadAf = []time.Duration{long}
		}
		r, err := s.ListNodes(st.ctx)
		if err != nil {
			rt.Fatalf("ListNodes on an empty store: %v", err)
		}
		st.start = r.Now
		actions := map[string]func(*rapid.T){
			"acquire":         st.acquire,
			"renew":           st.renew,
			"release":         st.release,
			"read_lease":      st.readLease,
			"register":        st.register,
			"heartbeat":       st.heartbeat,
			"deregister":      st.deregister,
			"update_node":     st.updateNode,
			"put_tasklist":    st.putTaskList,
			"delete_tasklist": st.deleteTaskList,
			"read_state":      st.readState,
			"read_assign":     st.readAssignments,
			"apply":           st.apply,
			"apply_2":         st.apply, // more weight: it is where most rules live
			"apply_3":         st.apply,
			"ack":             st.ack,
			"ack_2":           st.ack,
			"ack_3":           st.ack,
			"heartbeat_2":     st.heartbeat,
			"handoff":         st.handoff,
			"register_excl":   st.registerExclusive,
			"replace":         st.replace,
			"give_back":       st.giveBack,
			"give_back_2":     st.giveBack,
		}
		if c.Manual() {
			actions["advance"] = st.advance
		}
		// Start most runs from a small cluster, so that the random steps spend their time
		// on the interesting rules rather than on getting there.
		if rapid.IntRange(0, 4).Draw(rt, "bootstrap") > 0 {
			st.acquireKey(rt, "k1")
			for range rapid.IntRange(1, 3).Draw(rt, "boot_nodes") {
				st.register(rt)
			}
			for range rapid.IntRange(1, 2).Draw(rt, "boot_tasklists") {
				st.putTaskList(rt)
			}
		}
		// Repeat's run length is a command-line flag (30 steps on average); the rules
		// need longer histories, so the run length is drawn here.
		names := make([]string, 0, len(actions))
		for k := range actions {
			if k != "" {
				names = append(names, k)
			}
		}
		slices.Sort(names)
		// A real-time backend pays a round trip per call (and four more for the check
		// after each step), so its runs are shorter.
		lengths := []int{10, 50, 100, 200}
		if !c.Manual() {
			lengths = []int{10, 20, 40}
		}
		for range rapid.SampledFrom(lengths).Draw(rt, "steps") {
			actions[rapid.SampledFrom(names).Draw(rt, "action")](rt)
			st.check(rt)
		}
	})
	if t.Failed() {
		return
	}
	// The generators must reach the interesting outcomes, or the comparison proves little.
	keys := make([]string, 0, len(outcomes))
	for k := range outcomes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, outcomes[k])
	}
	t.Logf("outcomes:%s", b.String())
	// Only outcomes each run of the suite reaches dozens of times are required (rarer
	// ones, like an unassign or a death by heartbeat age, would make this flaky; the
	// table tests cover them deterministically). Real-time runs are shorter.
	want := []string{
		"acquire ok", "acquire " + engine.ErrLeaseHeld.Error(), "renew " + engine.ErrLeaseLost.Error(),
		"heartbeat ok", "heartbeat changed", "heartbeat " + engine.ErrNodeDead.Error(),
		"apply ok", "apply " + engine.ErrFenced.Error(), "apply " + engine.ErrConflict.Error(), "apply assign",
		"register_excl ok", "register_excl " + engine.ErrNodeInUse.Error(), "replace ok", "replace pending",
		"give_back " + engine.ErrConflict.Error(), "give_back " + engine.ErrNodeDead.Error(),
	}
	if manual {
		want = append(want, "heartbeat incoming", "renew ok", "release ok", "apply release", "apply delete", "apply dead",
			"ack ok", "ack "+engine.ErrConflict.Error(), "ack "+engine.ErrNodeDead.Error(),
			"deregister ok", "delete_tasklist ok", "acquire after expiry",
			"register_excl after expiry", "register_excl own retry", "register_excl over a dead incarnation",
			"heartbeat refused: being replaced", "give_back ok", "give_back not found")
	}
	for _, k := range want {
		if outcomes[k] == 0 && !testing.Short() {
			t.Errorf("no run reached outcome %q: the generators need adjusting", k)
		}
	}
}

// tag counts a named event for the coverage check.
func (st *smTest) tag(name string) { st.seenOutcomes[name]++ }

// note counts an outcome for the coverage check.
func (st *smTest) note(op string, err error) {
	if err == nil {
		st.seenOutcomes[op+" ok"]++
		return
	}
	st.seenOutcomes[op+" "+kindOf(err)]++
}

// sameErr fails unless the store's error is of the model's kind.
func sameErr(rt *rapid.T, op string, got, want error) {
	rt.Helper()
	if kindOf(got) != kindOf(want) {
		rt.Fatalf("%s: store says %v (%s), model says %s", op, got, kindOf(got), kindOf(want))
	}
}

// checkNow compares a reply's store time with the model's (manual clocks only).
func (st *smTest) checkNow(rt *rapid.T, op string, now time.Time) {
	rt.Helper()
	if st.m.manual && now.Sub(st.start) != st.m.now {
		rt.Fatalf("%s: reply Now is %v after start, model time is %v", op, now.Sub(st.start), st.m.now)
	}
}

func (st *smTest) checkLease(rt *rapid.T, op, key string, got engine.Lease, want mLease) {
	rt.Helper()
	if got.Key != key || got.Owner != want.owner || got.Epoch != want.epoch || got.Status != want.status {
		rt.Fatalf("%s: lease %+v, model has owner=%q epoch=%d status=%d", op, got, want.owner, want.epoch, want.status)
	}
	if st.m.manual && want.status == engine.LeaseActive && got.ExpiresAt.Sub(st.start) != want.expires {
		rt.Fatalf("%s: lease expires at +%v, model says +%v", op, got.ExpiresAt.Sub(st.start), want.expires)
	}
}

func (st *smTest) drawTTL(rt *rapid.T) time.Duration {
	return rapid.SampledFrom(st.ttls).Draw(rt, "ttl")
}

// drawEpoch draws the current epoch of key, or one next to it.
func (st *smTest) drawEpoch(rt *rapid.T, key string) uint64 {
	cur := uint64(1)
	if l := st.m.leases[key]; l != nil {
		cur = l.epoch
	}
	e := cur + uint64(rapid.IntRange(-1, 1).Draw(rt, "epoch_delta"))
	if rapid.IntRange(0, 3).Draw(rt, "epoch_exact") > 0 {
		e = cur // mostly the right one, so that writes get through
	}
	if e == 0 {
		e = 1
	}
	return e
}

// drawInc draws the node's current incarnation, or one next to it (≥ 1).
func (st *smTest) drawInc(rt *rapid.T, id string) uint64 {
	cur := uint64(1)
	if n := st.m.nodes[id]; n != nil {
		cur = n.inc
	}
	if rapid.IntRange(0, 3).Draw(rt, "inc_exact") > 0 {
		return cur
	}
	e := cur + uint64(rapid.IntRange(-1, 1).Draw(rt, "inc_delta"))
	if e == 0 {
		e = 1
	}
	return e
}

func (st *smTest) drawPartition(rt *rapid.T) engine.PartitionID {
	tl := rapid.SampledFrom(smTLs).Draw(rt, "tasklist")
	return pid(tl[0], tl[1], rapid.IntRange(0, smMaxP-1).Draw(rt, "partition"))
}

func (st *smTest) advance(rt *rapid.T) {
	d := rapid.SampledFrom([]time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second}).Draw(rt, "advance")
	st.c.Advance(d)
	st.m.now += d
}

func (st *smTest) acquire(rt *rapid.T) {
	st.acquireKey(rt, rapid.SampledFrom(smKeys).Draw(rt, "key"))
}

func (st *smTest) acquireKey(rt *rapid.T, key string) {
	owner, ttl := rapid.SampledFrom(smOwners).Draw(rt, "owner"), st.drawTTL(rt)
	l := st.m.leases[key]
	expired := l != nil && l.status == engine.LeaseActive && !l.held(st.m.now)
	got, err := st.s.AcquireLease(st.ctx, key, owner, ttl)
	want, werr := st.m.acquire(key, owner, ttl)
	op := fmt.Sprintf("AcquireLease(%s, %s, %v)", key, owner, ttl)
	sameErr(rt, op, err, werr)
	st.note("acquire", err)
	if err == nil && expired {
		st.tag("acquire after expiry")
	}
	if werr == engine.ErrLeaseHeld {
		var he *engine.LeaseHeldError
		if !errors.As(err, &he) || he.Holder != want.owner || he.Epoch != want.epoch || he.Key != key {
			rt.Fatalf("%s: %v, model says held by %s at epoch %d", op, err, want.owner, want.epoch)
		}
		if st.m.manual && (he.ExpiresAt.Sub(st.start) != want.expires || he.Now.Sub(st.start) != st.m.now) {
			rt.Fatalf("%s: %+v, model says expires +%v, now +%v", op, he, want.expires, st.m.now)
		}
		return
	}
	if err == nil {
		st.checkNow(rt, op, got.Now)
		st.checkLease(rt, op, key, got.Lease, want)
	}
}

func (st *smTest) renew(rt *rapid.T) {
	key, owner := rapid.SampledFrom(smKeys).Draw(rt, "key"), rapid.SampledFrom(smOwners).Draw(rt, "owner")
	epoch, ttl := st.drawEpoch(rt, key), st.drawTTL(rt)
	got, err := st.s.RenewLease(st.ctx, key, owner, epoch, ttl)
	want, werr := st.m.renew(key, owner, epoch, ttl)
	op := fmt.Sprintf("RenewLease(%s, %s, %d, %v)", key, owner, epoch, ttl)
	sameErr(rt, op, err, werr)
	st.note("renew", err)
	if err == nil {
		st.checkNow(rt, op, got.Now)
		st.checkLease(rt, op, key, got.Lease, want)
	}
}

func (st *smTest) release(rt *rapid.T) {
	key, owner := rapid.SampledFrom(smKeys).Draw(rt, "key"), rapid.SampledFrom(smOwners).Draw(rt, "owner")
	// Mostly the holder, so that releases happen.
	if l := st.m.leases[key]; l != nil && l.owner != "" && rapid.Bool().Draw(rt, "holder") {
		owner = l.owner
	}
	epoch := st.drawEpoch(rt, key)
	got, err := st.s.ReleaseLease(st.ctx, key, owner, epoch)
	want, werr := st.m.release(key, owner, epoch)
	op := fmt.Sprintf("ReleaseLease(%s, %s, %d)", key, owner, epoch)
	sameErr(rt, op, err, werr)
	st.note("release", err)
	if err == nil {
		st.checkNow(rt, op, got.Now)
		st.checkLease(rt, op, key, got.Lease, want)
	}
}

func (st *smTest) readLease(rt *rapid.T) {
	key := rapid.SampledFrom(smKeys).Draw(rt, "key")
	got, err := st.s.ReadLease(st.ctx, key)
	l := st.m.leases[key]
	var werr error
	if l == nil {
		werr = engine.ErrNotFound
	}
	sameErr(rt, "ReadLease("+key+")", err, werr)
	if err == nil {
		st.checkNow(rt, "ReadLease", got.Now)
		st.checkLease(rt, "ReadLease("+key+")", key, got.Lease, *l)
	}
}

func (st *smTest) register(rt *rapid.T) {
	id := rapid.SampledFrom(smNodes).Draw(rt, "node")
	capacity := rapid.IntRange(1, 3).Draw(rt, "capacity")
	var labels []engine.Label
	if rapid.Bool().Draw(rt, "labelled") {
		labels = []engine.Label{{Key: "zone", Value: rapid.SampledFrom([]string{"a", "b"}).Draw(rt, "zone")}}
	}
	got, err := st.s.RegisterNode(st.ctx, engine.NodeSpec{ID: id, Capacity: capacity, Labels: labels})
	n := st.m.nodes[id]
	if n == nil {
		n = &mNode{}
		st.m.nodes[id] = n
	}
	n.inc++
	n.alive, n.draining, n.capacity, n.labels, n.lastHB = true, false, capacity, labels, st.m.now
	n.process, n.replaceBy = engine.NodeProcess{}, engine.NodeProcess{}
	n.assignRev++
	sameErr(rt, "RegisterNode("+id+")", err, nil)
	st.checkNow(rt, "RegisterNode", got.Now)
	if got.Incarnation != n.inc {
		rt.Fatalf("RegisterNode(%s): incarnation %d, model says %d", id, got.Incarnation, n.inc)
	}
}

func (st *smTest) heartbeat(rt *rapid.T) {
	id := rapid.SampledFrom(smNodes).Draw(rt, "node")
	// Now and then a node something is on its way to, so that Incoming is exercised
	// (releases are rare: they need an assigned row with a live owner).
	var targets []string
	for _, r := range st.m.sortedRows(func(r *engine.Assignment) bool { return incomingTo(*r) != "" }) {
		targets = append(targets, incomingTo(r))
	}
	if len(targets) > 0 && rapid.IntRange(0, 2).Draw(rt, "incoming_target") == 0 {
		id = rapid.SampledFrom(targets).Draw(rt, "target_node")
	}
	inc := st.drawInc(rt, id)
	known := rapid.SampledFrom([]uint64{st.seen[id], st.seen[id], 0, st.seen[id] + 1}).Draw(rt, "known")
	got, err := st.s.Heartbeat(st.ctx, id, inc, known)
	op := fmt.Sprintf("Heartbeat(%s, %d, %d)", id, inc, known)
	n := st.m.nodes[id]
	st.note("heartbeat", err)
	if n == nil || n.inc != inc || !n.alive || n.replaceBy.Process != "" {
		if n != nil && n.inc == inc && n.alive {
			st.tag("heartbeat refused: being replaced")
		}
		sameErr(rt, op, err, engine.ErrNodeDead)
		return
	}
	sameErr(rt, op, err, nil)
	if got.Changed {
		st.tag("heartbeat changed")
	}
	if len(got.Incoming) > 0 {
		st.tag("heartbeat incoming")
	}
	n.lastHB = st.m.now
	st.checkNow(rt, op, got.Now)
	if got.AssignRevision != n.assignRev || got.Changed != (known != n.assignRev) {
		rt.Fatalf("%s: revision %d changed %v, model says %d", op, got.AssignRevision, got.Changed, n.assignRev)
	}
	var want []engine.Assignment
	var wantIncoming []engine.PartitionID
	if got.Changed {
		want = st.m.sortedRows(func(r *engine.Assignment) bool {
			return r.Owner == id && r.Incarnation == inc && (r.State == engine.Assigned || r.State == engine.Releasing)
		})
		wantIncoming = st.m.incoming(id)
	}
	sameRows(rt, op, got.Assignments, want)
	if !slices.Equal(got.Incoming, wantIncoming) {
		rt.Fatalf("%s: incoming %v, model says %v", op, got.Incoming, wantIncoming)
	}
	if got.Changed && got.Draining != n.draining {
		rt.Fatalf("%s: draining %v, model says %v", op, got.Draining, n.draining)
	}
	st.seen[id] = got.AssignRevision
}

func (st *smTest) deregister(rt *rapid.T) {
	id := rapid.SampledFrom(smNodes).Draw(rt, "node")
	inc := st.drawInc(rt, id)
	got, err := st.s.DeregisterNode(st.ctx, id, inc)
	op := fmt.Sprintf("DeregisterNode(%s, %d)", id, inc)
	st.note("deregister", err)
	n := st.m.nodes[id]
	if n == nil || inc > n.inc {
		sameErr(rt, op, err, engine.ErrNotFound)
		return
	}
	sameErr(rt, op, err, nil)
	st.checkNow(rt, op, got.Now)
	if inc == n.inc {
		n.alive = false
	}
}

func (st *smTest) updateNode(rt *rapid.T) {
	id := rapid.SampledFrom(smNodes).Draw(rt, "node")
	var u engine.NodeUpdate
	if rapid.Bool().Draw(rt, "set_draining") {
		d := rapid.Bool().Draw(rt, "draining")
		u.Draining = &d
	}
	if rapid.Bool().Draw(rt, "set_capacity") {
		c := rapid.IntRange(1, 4).Draw(rt, "capacity")
		u.Capacity = &c
	}
	if rapid.Bool().Draw(rt, "set_labels") {
		l := []engine.Label{{Key: "rack", Value: rapid.SampledFrom([]string{"1", "2"}).Draw(rt, "rack")}}
		u.Labels = &l
	}
	got, err := st.s.UpdateNode(st.ctx, id, u)
	n := st.m.nodes[id]
	if n == nil {
		sameErr(rt, "UpdateNode("+id+")", err, engine.ErrNotFound)
		return
	}
	sameErr(rt, "UpdateNode("+id+")", err, nil)
	st.checkNow(rt, "UpdateNode", got.Now)
	if u.Draining != nil {
		if n.draining != *u.Draining {
			n.assignRev++ // so that the node's next heartbeat reports the flag
			st.tag("drain flag changed")
		}
		n.draining = *u.Draining
	}
	if u.Capacity != nil {
		n.capacity = *u.Capacity
	}
	if u.Labels != nil {
		n.labels = *u.Labels
	}
}

func (st *smTest) putTaskList(rt *rapid.T) {
	tl := rapid.SampledFrom(smTLs).Draw(rt, "tasklist")
	n := rapid.IntRange(1, smMaxP).Draw(rt, "partitions")
	got, err := st.s.PutTaskList(st.ctx, engine.TaskList{Domain: tl[0], Name: tl[1], Partitions: n})
	sameErr(rt, "PutTaskList", err, nil)
	st.checkNow(rt, "PutTaskList", got.Now)
	st.m.tls[tl] = n
	for i := 0; i < n; i++ {
		p := pid(tl[0], tl[1], i)
		r := st.m.rows[p]
		switch {
		case r == nil:
			st.m.rows[p] = &engine.Assignment{Partition: p, State: engine.Unassigned, Revision: st.m.bump()}
		case r.State == engine.Deleted:
			r.State, r.Target, r.Revision = engine.Unassigned, "", st.m.bump()
		}
	}
}

func (st *smTest) deleteTaskList(rt *rapid.T) {
	tl := rapid.SampledFrom(smTLs).Draw(rt, "tasklist")
	got, err := st.s.DeleteTaskList(st.ctx, tl[0], tl[1])
	st.note("delete_tasklist", err)
	if _, ok := st.m.tls[tl]; !ok {
		sameErr(rt, "DeleteTaskList", err, engine.ErrNotFound)
		return
	}
	sameErr(rt, "DeleteTaskList", err, nil)
	st.checkNow(rt, "DeleteTaskList", got.Now)
	delete(st.m.tls, tl)
}

func (st *smTest) drawSince(rt *rapid.T) uint64 {
	return rapid.SampledFrom([]uint64{0, st.rev, st.m.rev, st.m.rev / 2}).Draw(rt, "since")
}

func (st *smTest) readState(rt *rapid.T) {
	since := st.drawSince(rt)
	got, err := st.s.ReadState(st.ctx, since)
	sameErr(rt, "ReadState", err, nil)
	st.compareState(rt, fmt.Sprintf("ReadState(%d)", since), got, since)
	st.rev = got.Revision
}

func (st *smTest) readAssignments(rt *rapid.T) {
	since := st.drawSince(rt)
	got, err := st.s.ReadAssignments(st.ctx, since)
	op := fmt.Sprintf("ReadAssignments(%d)", since)
	sameErr(rt, op, err, nil)
	st.checkNow(rt, op, got.Now)
	if got.Revision != st.m.rev {
		rt.Fatalf("%s: revision %d, model says %d", op, got.Revision, st.m.rev)
	}
	sameRows(rt, op, got.Assignments, st.m.sortedRows(func(r *engine.Assignment) bool { return r.Revision > since }))
	st.rev = got.Revision
}

func (st *smTest) apply(rt *rapid.T) {
	// A coordinator (re)acquires before it writes; sometimes the batch goes out anyway.
	if l := st.m.leases["k1"]; (l == nil || !l.held(st.m.now)) && rapid.IntRange(0, 3).Draw(rt, "acquire_first") > 0 {
		st.acquireKey(rt, "k1")
	}
	key := "k1"
	if rapid.IntRange(0, 4).Draw(rt, "fence_k2") == 0 {
		key = "k2"
	}
	b := engine.Batch{Fence: engine.Fence{Key: key, Epoch: st.drawEpoch(rt, key)}}
	for _, id := range smNodes {
		if rapid.IntRange(0, 15).Draw(rt, "dead_"+id) == 0 {
			b.Dead = append(b.Dead, engine.DeadNode{ID: id, Incarnation: st.drawInc(rt, id)})
		}
	}
	if len(b.Dead) > 0 {
		b.DeadAfter = rapid.SampledFrom(st.deadAf).Draw(rt, "dead_after")
	}
	used := map[engine.PartitionID]bool{}
	for range rapid.SampledFrom([]int{0, 1, 1, 1, 2, 3}).Draw(rt, "changes") {
		// Focus on rows in a given state now and then: unassigned rows are the most
		// common, and the handoff rules need assigned ones.
		focus := rapid.SampledFrom([]engine.PartitionState{engine.Unassigned, engine.Assigned, engine.Assigned, engine.Releasing, engine.Deleted}).Draw(rt, "focus")
		p := st.drawRow(rt, func(r *engine.Assignment) bool { return r.State == focus })
		if used[p] {
			continue
		}
		used[p] = true
		c := engine.Change{Kind: st.drawKind(rt, p), Partition: p, Revision: 1}
		if r := st.m.rows[p]; r != nil {
			c.Revision = r.Revision
		}
		if rapid.IntRange(0, 11).Draw(rt, "stale") == 0 {
			c.Revision++
		}
		switch c.Kind {
		case engine.ChangeAssign:
			c.Owner = st.drawLiveNode(rt)
			c.Incarnation = st.drawInc(rt, c.Owner)
		case engine.ChangeRelease:
			c.Target = rapid.SampledFrom(append([]string{""}, smNodes...)).Draw(rt, "target")
		}
		b.Changes = append(b.Changes, c)
	}
	st.applyBatch(rt, b)
}

// handoff is a well-formed step of a handoff by the current coordinator: assign an
// unassigned configured row to a live node, or release an assigned row towards a node.
// Random batches rarely get that far, and Incoming (rows on their way to a node) needs
// releases.
func (st *smTest) handoff(rt *rapid.T) {
	if l := st.m.leases["k1"]; l == nil || !l.held(st.m.now) {
		st.acquireKey(rt, "k1")
	}
	l := st.m.leases["k1"]
	b := engine.Batch{Fence: engine.Fence{Key: "k1", Epoch: l.epoch}}
	releasable := st.m.sortedRows(func(r *engine.Assignment) bool {
		return r.State == engine.Assigned && st.m.live(r.Owner, r.Incarnation, nil) && r.Epoch <= l.epoch
	})
	assignable := st.m.sortedRows(func(r *engine.Assignment) bool {
		return r.State == engine.Unassigned && st.m.configured(r.Partition) && r.Epoch <= l.epoch
	})
	switch {
	case len(releasable) > 0 && (len(assignable) == 0 || rapid.Bool().Draw(rt, "release_first")):
		r := rapid.SampledFrom(releasable).Draw(rt, "release_row")
		b.Changes = []engine.Change{{Kind: engine.ChangeRelease, Partition: r.Partition, Revision: r.Revision,
			Target: rapid.SampledFrom(smNodes).Draw(rt, "target")}}
	case len(assignable) > 0:
		r := rapid.SampledFrom(assignable).Draw(rt, "assign_row")
		owner := st.drawLiveNode(rt)
		inc := uint64(1)
		if n := st.m.nodes[owner]; n != nil {
			inc = n.inc
		}
		b.Changes = []engine.Change{{Kind: engine.ChangeAssign, Partition: r.Partition, Revision: r.Revision, Owner: owner, Incarnation: inc}}
	default:
		return
	}
	st.applyBatch(rt, b)
}

// applyBatch applies b to the store and the model and compares the outcomes.
func (st *smTest) applyBatch(rt *rapid.T, b engine.Batch) {
	got, err := st.s.Apply(st.ctx, b)
	werr := st.m.apply(b)
	op := fmt.Sprintf("Apply(%+v)", b)
	sameErr(rt, op, err, werr)
	st.note("apply", err)
	if err == nil {
		for _, c := range b.Changes {
			st.tag("apply " + c.Kind.String())
		}
		if len(b.Dead) > 0 {
			st.tag("apply dead")
		}
		if st.m.lastDying > 0 {
			st.tag("apply dead by age")
		}
		st.checkNow(rt, "Apply", got.Now)
		if got.Revision != st.m.rev {
			rt.Fatalf("%s: revision %d, model says %d", op, got.Revision, st.m.rev)
		}
	}
}

// drawRow draws, mostly, a partition whose model row satisfies keep, else any
// partition of the universe (which may have no row).
func (st *smTest) drawRow(rt *rapid.T, keep func(*engine.Assignment) bool) engine.PartitionID {
	rows := st.m.sortedRows(keep)
	if len(rows) == 0 || rapid.IntRange(0, 7).Draw(rt, "any_partition") == 0 {
		return st.drawPartition(rt)
	}
	return rows[rapid.IntRange(0, len(rows)-1).Draw(rt, "row")].Partition
}

// drawKind draws, mostly, the change that fits the row's state (so that batches get
// through), else any kind.
func (st *smTest) drawKind(rt *rapid.T, p engine.PartitionID) engine.ChangeKind {
	any := engine.ChangeKind(rapid.IntRange(1, 4).Draw(rt, "kind"))
	r := st.m.rows[p]
	if r == nil || rapid.IntRange(0, 7).Draw(rt, "fitting_kind") == 0 {
		return any
	}
	owned := r.State == engine.Assigned || r.State == engine.Releasing
	live := owned && st.m.live(r.Owner, r.Incarnation, nil)
	switch {
	case !st.m.configured(p) && !live && r.State != engine.Deleted:
		return engine.ChangeDelete
	case r.State == engine.Unassigned:
		return engine.ChangeAssign
	case r.State == engine.Assigned && live:
		return engine.ChangeRelease
	case owned && !live:
		return rapid.SampledFrom([]engine.ChangeKind{engine.ChangeAssign, engine.ChangeUnassign, engine.ChangeUnassign}).Draw(rt, "dead_owner_kind")
	}
	return any
}

// drawLiveNode draws, mostly, a node the model thinks alive.
func (st *smTest) drawLiveNode(rt *rapid.T) string {
	var live []string
	for _, id := range smNodes {
		if n := st.m.nodes[id]; n != nil && n.alive {
			live = append(live, id)
		}
	}
	if len(live) == 0 || rapid.IntRange(0, 3).Draw(rt, "any_node") == 0 {
		return rapid.SampledFrom(smNodes).Draw(rt, "node")
	}
	return rapid.SampledFrom(live).Draw(rt, "live_node")
}

func (st *smTest) ack(rt *rapid.T) {
	p := st.drawRow(rt, func(r *engine.Assignment) bool { return r.State == engine.Releasing })
	id := rapid.SampledFrom(smNodes).Draw(rt, "node")
	// Mostly the row's owner, so that acks get through.
	r := st.m.rows[p]
	if r != nil && r.Owner != "" && rapid.IntRange(0, 3).Draw(rt, "owner") > 0 {
		id = r.Owner
	}
	inc := st.drawInc(rt, id)
	gen := uint64(1)
	if r != nil {
		gen = r.Generation
	}
	if rapid.IntRange(0, 5).Draw(rt, "wrong_gen") == 0 {
		gen++
	}
	a := engine.Ack{Partition: p, Node: id, Incarnation: inc, Generation: gen}
	got, err := st.s.AckRelease(st.ctx, a)
	op := fmt.Sprintf("AckRelease(%+v)", a)
	st.note("ack", err)
	switch {
	case !st.m.live(id, inc, nil):
		sameErr(rt, op, err, engine.ErrNodeDead)
	case r == nil:
		sameErr(rt, op, err, engine.ErrNotFound)
	case r.State != engine.Releasing || r.Owner != id || r.Incarnation != inc || r.Generation != gen:
		sameErr(rt, op, err, engine.ErrConflict)
	default:
		sameErr(rt, op, err, nil)
		st.checkNow(rt, op, got.Now)
		// The owner loses the row; its target learns that the release was acknowledged
		// (the row stays on its way to it).
		if to := incomingTo(*r); to != "" && to != id {
			if n := st.m.nodes[to]; n != nil {
				n.assignRev++
			}
		}
		r.State, r.Owner, r.Incarnation, r.Revision = engine.Unassigned, "", 0, st.m.bump()
		st.m.nodes[id].assignRev++
	}
}

// check compares the store's whole observable state with the model's after every step.
func (st *smTest) check(rt *rapid.T) {
	got, err := st.s.ReadState(st.ctx, 0)
	if err != nil {
		rt.Fatalf("ReadState(0): %v", err)
	}
	st.compareState(rt, "state", got, 0)
	for _, k := range smKeys {
		r, err := st.s.ReadLease(st.ctx, k)
		l := st.m.leases[k]
		if l == nil {
			sameErr(rt, "ReadLease("+k+")", err, engine.ErrNotFound)
			continue
		}
		sameErr(rt, "ReadLease("+k+")", err, nil)
		st.checkLease(rt, "ReadLease("+k+")", k, r.Lease, *l)
	}
}

func (st *smTest) compareState(rt *rapid.T, op string, got engine.StateReply, since uint64) {
	rt.Helper()
	m := st.m
	st.checkNow(rt, op, got.Now)
	if got.Revision != m.rev {
		rt.Fatalf("%s: revision %d, model says %d", op, got.Revision, m.rev)
	}
	sameRows(rt, op, got.Assignments, m.sortedRows(func(r *engine.Assignment) bool { return r.Revision > since }))

	var wantTLs []engine.TaskList
	for k, n := range m.tls {
		wantTLs = append(wantTLs, engine.TaskList{Domain: k[0], Name: k[1], Partitions: n})
	}
	slices.SortFunc(wantTLs, func(a, b engine.TaskList) int {
		return strings.Compare(a.Domain+"\x00"+a.Name, b.Domain+"\x00"+b.Name)
	})
	if fmt.Sprint(got.TaskLists) != fmt.Sprint(wantTLs) {
		rt.Fatalf("%s: task lists %v, model says %v", op, got.TaskLists, wantTLs)
	}

	var ids []string
	for id := range m.nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if len(got.Nodes) != len(ids) {
		rt.Fatalf("%s: %d nodes, model has %v", op, len(got.Nodes), ids)
	}
	for i, id := range ids {
		n, g := m.nodes[id], got.Nodes[i]
		status := engine.NodeDead
		if n.alive {
			status = engine.NodeAlive
		}
		if g.ID != id || g.Incarnation != n.inc || g.Capacity != n.capacity || g.Draining != n.draining || g.Status != status || fmt.Sprint(g.Labels) != fmt.Sprint(n.labels) ||
			(engine.NodeProcess{Process: g.Process, Host: g.Host, PID: g.PID}) != n.process || g.ReplaceBy != n.replaceBy {
			rt.Fatalf("%s: node %+v, model says %s %+v", op, g, id, *n)
		}
		if m.manual && (g.HeartbeatAge != m.now-n.lastHB || g.LastHeartbeat.Sub(st.start) != n.lastHB) {
			rt.Fatalf("%s: node %s heartbeat at +%v age %v, model says +%v age %v", op, id, g.LastHeartbeat.Sub(st.start), g.HeartbeatAge, n.lastHB, m.now-n.lastHB)
		}
	}
}

func sameRows(rt *rapid.T, op string, got, want []engine.Assignment) {
	rt.Helper()
	if len(got) != len(want) {
		rt.Fatalf("%s: %d rows %+v, model says %d %+v", op, len(got), got, len(want), want)
	}
	for i := range got {
		// Store times are compared as instants (a backend may read them back in another
		// location or without a monotonic reading).
		g, w := got[i], want[i]
		at := g.GivenBackAt.Equal(w.GivenBackAt)
		g.GivenBackAt, w.GivenBackAt = time.Time{}, time.Time{}
		if g != w || !at {
			rt.Fatalf("%s: row %d is %+v, model says %+v", op, i, got[i], want[i])
		}
	}
}

// ---- exclusive registration, replace, give-back ----

// smProcess is process k ("a", "b", "c") of node id: a process token, with the host and
// pid it reports. Each node id has three, so that a fresh process, the holder's own retry
// and a replacer's retry are all drawn.
func smProcess(id, k string) engine.NodeProcess {
	return engine.NodeProcess{Process: id + "#" + k, Host: "host-" + k, PID: int(k[0]-'a') + 11}
}

// registerRefusal is the model's exclusive-registration rule (Store.RegisterNode,
// NodeSpec.DeadAfter and Replace), written from the contract rather than shared with
// the stores (engine.RegistrationHeld): it returns the refusal the store must give, or
// nil if spec registers now.
func (m *model) registerRefusal(spec engine.NodeSpec) *engine.NodeInUseError {
	n := m.nodes[spec.ID]
	if n == nil || spec.DeadAfter <= 0 || !n.alive || m.now-n.lastHB > spec.DeadAfter {
		return nil // new id, not exclusive, dead, or older than dead_after: it registers
	}
	me := engine.NodeProcess{Process: spec.Process, Host: spec.Host, PID: spec.PID}
	refuse := &engine.NodeInUseError{ID: spec.ID, Incarnation: n.inc, Holder: n.process}
	switch {
	case n.replaceBy.Process != "" && n.replaceBy.Process != spec.Process:
		refuse.By = n.replaceBy // being taken over: the holder and anyone else wait
	case n.replaceBy.Process != "":
		refuse.Pending, refuse.By = true, n.replaceBy // the replacer's own retry before the expiry
	case spec.Process != "" && spec.Process == n.process.Process:
		return nil // the holder's own retry after a lost reply
	case spec.Replace:
		refuse.Pending, refuse.By = true, me
	}
	return refuse
}

func (st *smTest) registerExclusive(rt *rapid.T) { st.registerExcl(rt, false) }
func (st *smTest) replace(rt *rapid.T)           { st.registerExcl(rt, true) }

// registerExcl is an exclusive registration (DeadAfter > 0), with Replace or without, by
// a fresh process of the id, the holder's own process, or the pending replacer.
func (st *smTest) registerExcl(rt *rapid.T, replace bool) {
	id := rapid.SampledFrom(smNodes).Draw(rt, "node")
	// Now and then an id being taken over, so that takeovers (and the refusals of
	// others meanwhile) happen.
	var pending []string
	for _, nid := range smNodes {
		if n := st.m.nodes[nid]; n != nil && n.replaceBy.Process != "" {
			pending = append(pending, nid)
		}
	}
	if len(pending) > 0 && rapid.Bool().Draw(rt, "pending_id") {
		id = rapid.SampledFrom(pending).Draw(rt, "pending_node")
	}
	n := st.m.nodes[id]
	procs := []engine.NodeProcess{smProcess(id, "a"), smProcess(id, "b"), smProcess(id, "c")}
	if !replace {
		procs = append(procs, engine.NodeProcess{}) // an anonymous process is never its own retry
	}
	if n != nil && n.process.Process != "" {
		procs = append(procs, n.process, n.process)
	}
	if n != nil && n.replaceBy.Process != "" {
		procs = append(procs, n.replaceBy, n.replaceBy, n.replaceBy, n.replaceBy) // so that takeovers happen
	}
	p := rapid.SampledFrom(procs).Draw(rt, "process")
	spec := engine.NodeSpec{ID: id, Capacity: rapid.IntRange(1, 3).Draw(rt, "capacity"),
		Process: p.Process, Host: p.Host, PID: p.PID, DeadAfter: rapid.SampledFrom(st.deadAf).Draw(rt, "dead_after"), Replace: replace}
	if rapid.Bool().Draw(rt, "labelled") {
		spec.Labels = []engine.Label{{Key: "zone", Value: rapid.SampledFrom([]string{"a", "b"}).Draw(rt, "zone")}}
	}
	opName := "register_excl"
	if replace {
		opName = "replace"
	}
	op := fmt.Sprintf("RegisterNode(%+v)", spec)
	got, err := st.s.RegisterNode(st.ctx, spec)
	want := st.m.registerRefusal(spec)
	st.note(opName, err)
	if want != nil {
		sameErr(rt, op, err, engine.ErrNodeInUse)
		var e *engine.NodeInUseError
		if !errors.As(err, &e) {
			rt.Fatalf("%s: %v is not a *NodeInUseError", op, err)
		}
		if e.ID != want.ID || e.Incarnation != want.Incarnation || e.Holder != want.Holder || e.By != want.By || e.Pending != want.Pending {
			rt.Fatalf("%s: refusal id %s incarnation %d holder %+v by %+v pending %v, model says id %s incarnation %d holder %+v by %+v pending %v",
				op, e.ID, e.Incarnation, e.Holder, e.By, e.Pending, want.ID, want.Incarnation, want.Holder, want.By, want.Pending)
		}
		if e.ExpiresAt.Sub(e.LastHeartbeat) != spec.DeadAfter || e.Now.Before(e.LastHeartbeat) {
			rt.Fatalf("%s: refusal times: heartbeat %v, now %v, expires %v; want expires = heartbeat + %v, heartbeat ≤ now", op, e.LastHeartbeat, e.Now, e.ExpiresAt, spec.DeadAfter)
		}
		if st.m.manual && (e.LastHeartbeat.Sub(st.start) != n.lastHB || e.Now.Sub(st.start) != st.m.now) {
			rt.Fatalf("%s: refusal heartbeat at +%v now +%v, model says +%v, +%v", op, e.LastHeartbeat.Sub(st.start), e.Now.Sub(st.start), n.lastHB, st.m.now)
		}
		switch {
		case want.Pending && n.replaceBy.Process == "":
			st.tag(opName + " pending") // a takeover starts: the holder's heartbeats are refused from now on
			n.replaceBy = want.By
		case want.Pending:
			st.tag(opName + " pending retry")
		case want.By.Process != "":
			st.tag(opName + " refused: being replaced")
		}
		return
	}
	sameErr(rt, op, err, nil)
	st.checkNow(rt, op, got.Now)
	switch {
	case n == nil:
	case !n.alive:
		st.tag(opName + " over a dead incarnation")
	case n.replaceBy.Process != "" && n.replaceBy.Process == spec.Process:
		st.tag(opName + " takeover")
	case st.m.now-n.lastHB > spec.DeadAfter:
		st.tag(opName + " after expiry")
	default:
		st.tag(opName + " own retry")
	}
	if n == nil {
		n = &mNode{}
		st.m.nodes[id] = n
	}
	n.inc++
	n.alive, n.draining, n.capacity, n.labels, n.lastHB = true, false, spec.Capacity, spec.Labels, st.m.now
	n.process, n.replaceBy = p, engine.NodeProcess{}
	n.assignRev++
	if got.Incarnation != n.inc {
		rt.Fatalf("%s: incarnation %d, model says %d", op, got.Incarnation, n.inc)
	}
}

// giveBack is a worker handing back a row: mostly an Assigned row by its owner at its
// incarnation and generation, else another node, a stale incarnation or generation, or a
// row in another state.
func (st *smTest) giveBack(rt *rapid.T) {
	focus := rapid.SampledFrom([]engine.PartitionState{engine.Assigned, engine.Assigned, engine.Assigned, engine.Releasing, engine.Unassigned}).Draw(rt, "focus")
	keep := func(r *engine.Assignment) bool { return r.State == focus }
	if focus == engine.Assigned && rapid.Bool().Draw(rt, "live_owner") {
		// A row its owner can give back (random draws seldom get one on a short run).
		keep = func(r *engine.Assignment) bool {
			return r.State == engine.Assigned && st.m.live(r.Owner, r.Incarnation, nil)
		}
	}
	p := st.drawRow(rt, keep)
	id := rapid.SampledFrom(smNodes).Draw(rt, "node")
	r := st.m.rows[p]
	if r != nil && r.Owner != "" && rapid.IntRange(0, 3).Draw(rt, "owner") > 0 {
		id = r.Owner
	}
	inc := st.drawInc(rt, id)
	if r != nil && r.Owner == id && rapid.IntRange(0, 3).Draw(rt, "row_inc") > 0 {
		inc = r.Incarnation // the row's incarnation, which may be a replaced one
	}
	gen := uint64(1)
	if r != nil {
		gen = r.Generation
	}
	switch rapid.IntRange(0, 7).Draw(rt, "wrong_gen") {
	case 0:
		gen++ // a generation the row has not reached
	case 1:
		if gen > 0 {
			gen-- // a stale generation (the owner's previous tenure of the row)
		}
	}
	g := engine.Ack{Partition: p, Node: id, Incarnation: inc, Generation: gen}
	got, err := st.s.GiveBack(st.ctx, g)
	op := fmt.Sprintf("GiveBack(%+v)", g)
	st.note("give_back", err)
	switch {
	case !st.m.live(id, inc, nil):
		sameErr(rt, op, err, engine.ErrNodeDead)
	case r == nil:
		sameErr(rt, op, err, engine.ErrNotFound)
	case r.State != engine.Assigned || r.Owner != id || r.Incarnation != inc || r.Generation != gen:
		sameErr(rt, op, err, engine.ErrConflict)
	default:
		sameErr(rt, op, err, nil)
		st.checkNow(rt, op, got.Now)
		if st.m.nodes[id].replaceBy.Process != "" {
			st.tag("give_back while being replaced")
		}
		old := *r
		r.State, r.Owner, r.Incarnation, r.Target = engine.Unassigned, "", 0, ""
		r.GivenBackBy, r.GivenBackAt = id, got.Now
		if st.m.manual {
			r.GivenBackAt = st.start.Add(st.m.now)
		}
		r.Revision = st.m.bump()
		// The giver loses the row (like an acknowledgement's, the revisions of the nodes
		// the row was or is on its way to move too; an Assigned row is on its way to none).
		touched := map[string]bool{id: true, incomingTo(old): true, incomingTo(*r): true}
		for t := range touched {
			if nd := st.m.nodes[t]; nd != nil {
				nd.assignRev++
			}
		}
	}
}
