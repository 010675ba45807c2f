package engine

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Node is one helix node, both roles: coordinator candidate and worker.
// It is a pure state machine: Step(now, input) → effects. now is the node's own
// monotonic clock; it must never go backwards.
//
// The protocol, in short (DESIGN.md has the why):
//
//   - Worker (unless Config.NoWork): register, then heartbeat every Heartbeat, one in
//     flight at a time, passing the last assignment revision it applied. Its right to
//     process lasts until the last successful heartbeat's SEND time + DeadAfter·(1−ρ) −
//     SafetyMargin; when that passes it stops everything (self-fence) and keeps
//     heartbeating. It starts what is Assigned to its incarnation, stops and
//     acknowledges what is Releasing, stops what is gone. ErrNodeDead: stop everything,
//     register again. Registration is exclusive (one process per id): refused with
//     ErrNodeInUse before ever registering, it waits for the holder's registration to
//     expire once, then stops if the holder still heartbeats; refused after having been
//     registered (replaced), it stops. Stopped.Err says why.
//   - Identity: the lease owner and the registration's Process are this process's
//     token, LeaseOwner(NodeID, Config.Nonce), never the bare id.
//   - Coordinator candidate (unless Config.NoCandidate): a standby polls the lease every
//     RetryPeriod ± RetryJitter (seeded); a holder renews every RenewInterval and counts
//     its lease from each request's send time; it steps down when that runs out, or at
//     once on ErrLeaseLost / ErrFenced. Every Tick it reads the state (incrementally when
//     it can), declares dead the nodes whose heartbeat is older than DeadAfter, plans
//     with the allocator and applies the changes in one batch fenced by its epoch. In
//     steady state it writes nothing.
//   - Every request carries Deadline = now + RequestTimeout; at the deadline the node
//     treats it as ErrUnavailable (outcome unknown) and ignores a later reply.
//   - Drain gives every partition back; Shutdown drains (for at most 2 × DeadAfter),
//     releases the lease, deregisters and emits Stopped.
//
// The worker half lives in worker.go, the coordinator half in coordinator.go; this file
// holds what they share: the request table (IDs, deadlines, timeouts), the Step loop,
// the wake-up computation, shutdown and the state snapshot.
type Node struct {
	cfg Config
	rng *rand.Rand
	// owner is this process's token, LeaseOwner(NodeID, nonce): the lease owner and the
	// registration's Process. Never the bare id, so that a second process with the same
	// id cannot renew this one's lease or share its epoch.
	owner string
	// stopErr is why the node stopped on its own (its id is held by another process);
	// carried by the Stopped effect.
	stopErr error

	now     time.Time
	out     []Effect
	started bool

	// Request table. IDs grow strictly; a reply whose ID is not here (unknown, timed
	// out, or dropped because the role that sent it ended) is ignored.
	lastID  uint64
	pending map[uint64]*pendingReq

	w worker
	c coordinator

	// Shutdown: phase moves none → draining → finishing → stopped.
	phase      shutdownPhase
	shutdownBy time.Time // give up waiting for the drain at this time
	finishing  int       // release/deregister requests still outstanding
	stopped    bool
}

type shutdownPhase uint8

const (
	phaseRunning   shutdownPhase = iota
	phaseDraining                // Shutdown received: draining, still coordinating
	phaseFinishing               // partitions stopped, releasing the lease and deregistering
	phaseStopped
)

type reqKind uint8

const (
	rkRegister reqKind = iota + 1
	rkHeartbeat
	rkAck
	rkDrainFlag
	rkDeregister
	rkAcquire
	rkRenew
	rkRelease
	rkReadState
	rkApply
	rkGiveBack
)

// worker: a request of the worker's registration, forgotten when it ends (node dead,
// shutdown). coordinator: a request of a term as coordinator, forgotten when it steps
// down (an acquire is a standby's, and a shutdown's release outlives the term).
func (k reqKind) worker() bool {
	return k >= rkRegister && k <= rkDrainFlag || k == rkGiveBack
}
func (k reqKind) coordinator() bool { return k == rkRenew || k == rkReadState || k == rkApply }

// pendingReq is what the node remembers about a request it waits for.
type pendingReq struct {
	kind     reqKind
	sent     time.Time
	deadline time.Time
	// term / wgen: the coordinator term and worker registration generation at send; a
	// reply from an earlier term or generation is stale and ignored.
	term uint64
	wgen uint64
	// heartbeat
	known uint64
	// ack
	part PartitionID
	gen  uint64
	// drain flag
	draining bool
	// heartbeat: worker.drainGen at send (see adoptStoreDrain)
	drainGen uint64
	// read state
	full bool
	// apply
	batch *Batch
}

// errTimeout is what a request that reached its deadline is answered with: the
// outcome is unknown, exactly like ErrUnavailable.
var errTimeout = fmt.Errorf("%w: request deadline passed", ErrUnavailable)

// NewNode validates cfg (after WithDefaults) and returns a node that has not started.
// seed drives the node's own randomness (retry jitter); the same seed and inputs give
// the same effects.
func NewNode(cfg Config, seed uint64) (*Node, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	nonce := cfg.Nonce
	if nonce == "" {
		// Deterministic for a given seed, and drawn without touching rng, so that a
		// driver that passes no nonce sees the same jitter as before.
		nonce = fmt.Sprintf("%016x", mix64(seed))
	}
	return &Node{
		cfg:     cfg,
		owner:   LeaseOwner(cfg.NodeID, nonce),
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		pending: map[uint64]*pendingReq{},
		w: worker{owned: map[PartitionID]uint64{}, acks: map[PartitionID]*pendingAck{},
			sup: map[PartitionID]*supervised{}, givenBack: map[PartitionID]GivenBackPartition{}},
	}, nil
}

// mix64 is splitmix64's finalizer: a seed's bits spread over the whole word.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Owner is this process's lease owner token, LeaseOwner(NodeID, nonce).
func (n *Node) Owner() string { return n.owner }

// Step advances the node: it consumes one input at node time now and returns the
// effects to carry out, in order. The first Step (whatever its input) starts the node.
// After Stopped has been emitted every input is ignored.
func (n *Node) Step(now time.Time, in Input) []Effect {
	if n.stopped {
		return nil
	}
	if now.Before(n.now) {
		// The contract says now never goes backwards; holding the previous value keeps
		// every deadline conservative if a driver breaks it.
		now = n.now
	}
	n.now = now
	n.out = nil
	if !n.started {
		n.started = true
		n.start()
	}
	// Timeouts first: a reply arriving exactly at its deadline has been abandoned by
	// the driver already.
	n.expireRequests()
	switch in := in.(type) {
	case StoreReply:
		n.onReply(in)
	case Drain:
		n.onDrain(!in.Undrain)
	case Shutdown:
		n.onShutdown()
	case PartitionFailed:
		n.onPartitionFailed(in)
	}
	n.runTimers()
	if !n.stopped {
		if at, ok := n.nextWake(); ok {
			n.emit(WakeAt{At: at})
		}
	}
	out := n.out
	n.out = nil
	return out
}

func (n *Node) start() {
	if !n.cfg.NoWork {
		n.sendRegister()
	}
	if !n.cfg.NoCandidate {
		n.c.pollNext = n.now // poll at once: a cold cluster elects within one round trip
	}
}

func (n *Node) emit(e Effect) { n.out = append(n.out, e) }

func (n *Node) event(kind string, detail string) {
	n.emit(Event{Kind: kind, Epoch: n.c.epoch, Node: n.cfg.NodeID, Detail: detail})
}

// send records a pending request and emits it with Deadline = now + RequestTimeout.
func (n *Node) send(p *pendingReq, op Op) uint64 {
	n.lastID++
	id := n.lastID
	p.sent = n.now
	p.deadline = n.now.Add(n.cfg.RequestTimeout)
	p.term = n.c.term
	p.wgen = n.w.wgen
	n.pending[id] = p
	n.emit(StoreRequest{ID: id, Op: op, Deadline: p.deadline})
	return id
}

// expireRequests answers every request whose deadline has passed with errTimeout, in
// ID order so that the outcome is deterministic.
func (n *Node) expireRequests() {
	var due []uint64
	for id, p := range n.pending {
		if !n.now.Before(p.deadline) {
			due = append(due, id)
		}
	}
	slices.Sort(due)
	for _, id := range due {
		p := n.pending[id]
		if p == nil {
			continue // dropped while an earlier timeout was handled
		}
		delete(n.pending, id)
		n.dispatch(p, nil, errTimeout)
	}
}

// dropPending forgets every pending request matching f: their replies will be ignored.
func (n *Node) dropPending(f func(*pendingReq) bool) {
	for id, p := range n.pending {
		if f(p) {
			delete(n.pending, id)
		}
	}
}

func (n *Node) onReply(r StoreReply) {
	p, ok := n.pending[r.ID]
	if !ok {
		return // unknown, late or from a role that has ended
	}
	delete(n.pending, r.ID)
	err := r.Err
	if err == nil && r.Value == nil {
		err = fmt.Errorf("%w: reply without a value", ErrUnavailable)
	}
	n.dispatch(p, r.Value, err)
}

func (n *Node) dispatch(p *pendingReq, v any, err error) {
	switch p.kind {
	case rkRegister:
		n.onRegister(p, v, err)
	case rkHeartbeat:
		n.onHeartbeat(p, v, err)
	case rkAck:
		n.onAck(p, v, err)
	case rkDrainFlag:
		n.onDrainFlag(p, v, err)
	case rkDeregister, rkRelease:
		n.onFinishReply(p, err)
	case rkAcquire:
		n.onAcquire(p, v, err)
	case rkRenew:
		n.onRenew(p, v, err)
	case rkReadState:
		n.onReadState(p, v, err)
	case rkApply:
		n.onApply(p, v, err)
	case rkGiveBack:
		n.onGiveBack(p, v, err)
	}
}

// replyAs extracts a reply value of type T, accepting T or *T.
func replyAs[T any](v any) (T, bool) {
	switch x := v.(type) {
	case T:
		return x, true
	case *T:
		if x != nil {
			return *x, true
		}
	}
	var zero T
	return zero, false
}

// window is the conservative end of a right counted from `from`: from + d·(1−ρ) −
// SafetyMargin. The drift term is rounded to the nanosecond so that the result is
// exact for round configurations.
func (n *Node) window(from time.Time, d time.Duration) time.Time {
	drift := time.Duration(math.Round(float64(d) * n.cfg.DriftRate))
	return from.Add(d - drift - n.cfg.SafetyMargin)
}

func (n *Node) runTimers() {
	if n.phase == phaseRunning || n.phase == phaseDraining {
		if !n.cfg.NoCandidate {
			n.coordinatorTimers()
		}
		if !n.cfg.NoWork {
			n.workerTimers()
		}
	}
	n.noteDrained()
	if n.phase == phaseDraining && (n.drained() || !n.w.registered || !n.now.Before(n.shutdownBy)) {
		n.finish()
	}
}

// nextWake is the earliest time at which some timer of the node can fire. Timers
// blocked by a request in flight are left out (that request's deadline is in).
func (n *Node) nextWake() (time.Time, bool) {
	var at time.Time
	ok := false
	add := func(t time.Time) {
		if !ok || t.Before(at) {
			at, ok = t, true
		}
	}
	for _, p := range n.pending {
		add(p.deadline)
	}
	if n.phase == phaseRunning || n.phase == phaseDraining {
		if !n.cfg.NoCandidate {
			n.coordinatorWake(add)
		}
		if !n.cfg.NoWork {
			n.workerWake(add)
		}
	}
	if n.phase == phaseDraining {
		add(n.shutdownBy)
	}
	return at, ok
}

func (n *Node) onShutdown() {
	if n.phase != phaseRunning {
		return
	}
	n.event("shutting_down", "")
	n.phase = phaseDraining
	// Long enough for the coordinator to move every partition away in the usual case,
	// bounded so that a shutdown always ends.
	n.shutdownBy = n.now.Add(2 * n.cfg.DeadAfter)
	if !n.w.draining {
		n.onDrain(true)
	}
}

// finish ends a shutdown: stop everything, step down and release the lease, deregister.
// Stopped is emitted when those calls have been answered (or timed out).
func (n *Node) finish() {
	n.phase = phaseFinishing
	n.stopAll(StopShutdown)
	n.w.acks = map[PartitionID]*pendingAck{}
	n.forgetSupervision()
	if n.c.coord {
		epoch := n.c.epoch
		// Stop believing before the release is sent: once it lands another node may
		// take the lease at once.
		n.stepDown("shutdown")
		n.finishing++
		n.send(&pendingReq{kind: rkRelease}, OpReleaseLease{Key: n.cfg.LeaseKey, Owner: n.owner, Epoch: epoch})
	}
	if n.c.acquireInFlight {
		// Wait for it: if it was granted, the lease must be released, not left to expire.
		n.finishing++
	}
	if n.w.registered {
		inc := n.w.inc
		n.w.registered = false
		n.dropPending(func(p *pendingReq) bool { return p.kind.worker() })
		n.finishing++
		n.send(&pendingReq{kind: rkDeregister}, OpDeregisterNode{ID: n.cfg.NodeID, Incarnation: inc})
	}
	n.maybeStopped()
}

func (n *Node) onFinishReply(p *pendingReq, err error) {
	if err != nil {
		what := "deregister"
		if p.kind == rkRelease {
			what = "release"
		}
		n.event("shutdown_call_failed", fmt.Sprintf("%s: %v", what, err))
	}
	if n.phase != phaseFinishing {
		return
	}
	n.finishing--
	n.maybeStopped()
}

func (n *Node) maybeStopped() {
	if n.phase == phaseFinishing && n.finishing <= 0 {
		n.phase = phaseStopped
		n.stopped = true
		n.pending = map[uint64]*pendingReq{}
		n.event("stopped", "")
		n.emit(Stopped{Err: n.stopErr})
	}
}

// OwnedPartition is a partition the node is processing. A partition whose row turns
// Releasing is stopped in the same step, so every owned partition is Assigned.
type OwnedPartition struct {
	Partition  PartitionID
	Generation uint64
}

// NodeState is a read-only snapshot of a node's beliefs, for checkers, status pages
// and metrics.
type NodeState struct {
	ID          string
	Incarnation uint64 // 0 until registered
	// Coordinator: the node believes it holds the lease at Epoch, until LeaseUntil
	// (node clock, conservative).
	Coordinator bool
	Epoch       uint64
	LeaseUntil  time.Time
	// Registered: the node has an incarnation it believes alive. It may process Owned
	// only until LivenessUntil (node clock, conservative: last successful heartbeat's
	// send time + DeadAfter·(1−ρ) − SafetyMargin); after that it must have stopped them.
	Registered    bool
	LivenessUntil time.Time
	Draining      bool
	Drained       bool // draining and owns nothing
	Stopped       bool
	Owned         []OwnedPartition // sorted by partition
	// Supervised: partitions whose handler failed here recently (running again,
	// restarting after a backoff, or being given back), sorted. GivenBack: partitions
	// this node gave back in the last GiveBackCoolDown, sorted. Failing (coordinator
	// only): partitions given back by every eligible worker, waiting for a cool-down to
	// end, sorted.
	Supervised []SupervisedPartition
	GivenBack  []GivenBackPartition
	Failing    []PartitionID
}

// State returns the node's beliefs as of its last Step.
func (n *Node) State() NodeState {
	s := NodeState{
		ID:            n.cfg.NodeID,
		Incarnation:   n.w.inc,
		Coordinator:   n.c.coord,
		Registered:    n.w.registered,
		LivenessUntil: n.w.livenessUntil,
		Draining:      n.w.draining || (n.cfg.NoWork && n.phase != phaseRunning),
		Drained:       n.drained(),
		Stopped:       n.stopped,
	}
	if n.c.coord {
		s.Epoch, s.LeaseUntil = n.c.epoch, n.c.leaseUntil
	}
	for _, p := range n.ownedSorted() {
		s.Owned = append(s.Owned, OwnedPartition{Partition: p, Generation: n.w.owned[p]})
	}
	n.supervisionState(&s)
	return s
}

// isErr is errors.Is, short.
func isErr(err, target error) bool { return errors.Is(err, target) }
