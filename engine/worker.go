package engine

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// worker is the worker half of a Node: register, heartbeat, follow the assignment rows
// of its incarnation, and stop everything as soon as it can no longer be sure the
// coordinator still counts it alive.
type worker struct {
	// wgen counts registrations; replies to requests of an earlier one are ignored.
	wgen        uint64
	inc         uint64
	registered  bool
	registering bool
	// heldSeen: the last heartbeat (store time) of the process that held the id when this
	// one's first registration was refused; zero if none was.
	heldSeen time.Time

	hbInFlight bool
	hbNext     time.Time // next heartbeat (or registration retry)
	// lastOK is the send time of the last successful heartbeat (or registration):
	// liveness is always counted from a send, never from a reply.
	lastOK        time.Time
	livenessUntil time.Time
	fenced        bool   // liveness ran out: everything stopped, waiting for a heartbeat
	known         uint64 // assignment revision of the last list applied; 0 = want all

	// incoming: the partitions on their way to this node (HeartbeatReply.Incoming),
	// sorted, as of the last list applied. While any is on its way the node heartbeats
	// every fastHeartbeat, so that it learns of the assignment soon after the old
	// owner's ack instead of up to a whole Heartbeat later.
	incoming []PartitionID

	owned  map[PartitionID]uint64 // running partitions → generation
	myRows int                    // rows (assigned or releasing) of the last list
	acks   map[PartitionID]*pendingAck

	// sup: partitions whose handler failed here (supervise.go); givenBack: those this
	// node gave back recently, for status.
	sup       map[PartitionID]*supervised
	givenBack map[PartitionID]GivenBackPartition

	draining      bool // wanted
	drainSynced   bool // the store's flag equals draining
	drainInFlight bool
	drainedNoted  bool
	// drainGen grows with every change of the wish and every write of the flag: a
	// heartbeat's view of the store's flag is only news if nothing of the node's own
	// happened to the flag since the heartbeat was sent.
	drainGen uint64
}

type pendingAck struct {
	gen      uint64
	inFlight bool
}

func (n *Node) sendRegister() {
	n.w.registering = true
	n.send(&pendingReq{kind: rkRegister}, OpRegisterNode{Spec: NodeSpec{ID: n.cfg.NodeID, Capacity: n.cfg.Capacity, Labels: n.cfg.Labels,
		Process: n.owner, Host: n.cfg.Host, PID: n.cfg.PID, DeadAfter: n.cfg.DeadAfter,
		// Only the first registration may take the id over: once this process has held
		// it, losing it means someone else took it, and taking it back would start a loop.
		Replace: n.cfg.Replace && n.w.inc == 0}})
}

// registrationRefused: another live process holds the node id.
//
// With Replace the refusal is Pending: the holder's heartbeats are refused from now on,
// and the node retries when the holder's registration expires.
//
// Before this process ever registered, the holder may be a crashed predecessor whose
// registration has not expired yet (a supervisor restarts a killed process within a
// second): the node waits until the registration would expire and tries again, once per
// expiry. If by then the holder has heartbeated again, it is alive — a duplicate start
// — and the node stops with the error. After this process had registered, being refused
// means another process took the id over (replaced it): it stops at once. Either way it
// never takes the id back by force, so two processes never evict each other in a loop.
func (n *Node) registrationRefused(err error) {
	var held *NodeInUseError
	if n.w.inc == 0 && errors.As(err, &held) && (held.Pending || n.w.heldSeen.IsZero() || !held.LastHeartbeat.After(n.w.heldSeen)) {
		n.w.heldSeen = held.LastHeartbeat
		// Count the store's remaining time on this node's clock as if it ran slow (ρ),
		// plus the margin, so that the retry lands after the store's expiry.
		left := max(held.ExpiresAt.Sub(held.Now), 0)
		wait := left + time.Duration(math.Round(float64(left)*n.cfg.DriftRate)) + n.cfg.SafetyMargin + time.Millisecond
		n.w.hbNext = n.now.Add(wait)
		n.event("registration_waiting", fmt.Sprintf("%v; retrying once it expires, in %v", err, wait))
		return
	}
	if n.w.inc == 0 {
		n.event("registration_refused", err.Error())
		n.stopErr = fmt.Errorf("node %q not started: %w", n.cfg.NodeID, err)
	} else {
		n.event("replaced", fmt.Sprintf("incarnation %d: %v", n.w.inc, err))
		n.stopErr = fmt.Errorf("node %q incarnation %d was replaced by another process; stopping rather than taking the id back: %w", n.cfg.NodeID, n.w.inc, err)
	}
	n.finish()
}

func (n *Node) onRegister(p *pendingReq, v any, err error) {
	if p.wgen != n.w.wgen || n.phase >= phaseFinishing {
		return
	}
	n.w.registering = false
	if isErr(err, ErrNodeInUse) {
		n.registrationRefused(err)
		return
	}
	r, ok := replyAs[RegisterReply](v)
	if err != nil || !ok {
		n.event("register_failed", errString(err))
		n.w.hbNext = n.now.Add(n.cfg.Heartbeat)
		return
	}
	n.w.inc = r.Incarnation
	n.w.registered = true
	n.w.fenced = false
	n.w.known = 0
	n.w.myRows = 0
	n.w.incoming = nil
	n.forgetSupervision()
	// Registration records a heartbeat at store time, which is after the send.
	n.w.lastOK = p.sent
	n.w.livenessUntil = n.window(p.sent, n.cfg.DeadAfter)
	n.w.hbNext = p.sent.Add(n.cfg.Heartbeat)
	// A new incarnation starts not draining in the store.
	n.w.drainSynced = !n.w.draining
	n.w.drainGen++
	n.emit(Event{Kind: "registered", Node: n.cfg.NodeID, Detail: fmt.Sprintf("incarnation %d", r.Incarnation)})
	n.syncDrainFlag()
}

func (n *Node) workerTimers() {
	w := &n.w
	if !w.registered {
		if !w.registering && !n.now.Before(w.hbNext) {
			n.sendRegister()
		}
		return
	}
	// Self-fence: without a successful heartbeat sent after now − DeadAfter·(1−ρ) +
	// margin, the coordinator may already have declared this incarnation dead and given
	// its partitions away.
	if !w.fenced && !n.now.Before(w.livenessUntil) {
		w.fenced = true
		n.stopAll(StopSelfFenced)
		w.known = 0 // once a heartbeat succeeds again, fetch the full list
		n.event("self_fenced", fmt.Sprintf("no successful heartbeat sent since %v", w.lastOK))
	}
	if !w.hbInFlight && !n.now.Before(w.hbNext) {
		w.hbInFlight = true
		w.hbNext = n.now.Add(n.heartbeatInterval())
		n.send(&pendingReq{kind: rkHeartbeat, known: w.known, drainGen: w.drainGen}, OpHeartbeat{ID: n.cfg.NodeID, Incarnation: w.inc, Known: w.known})
		// Retries ride on the heartbeat's rhythm.
		n.sendAcks()
		n.sendGiveBacks()
		n.syncDrainFlag()
	}
	n.supervisionTimers()
}

func (n *Node) workerWake(add func(time.Time)) {
	w := &n.w
	if !w.registered {
		if !w.registering {
			add(w.hbNext)
		}
		return
	}
	if !w.fenced {
		add(w.livenessUntil)
	}
	if !w.hbInFlight {
		add(w.hbNext)
	}
	n.supervisionWake(add)
}

func (n *Node) onHeartbeat(p *pendingReq, v any, err error) {
	if p.wgen != n.w.wgen || !n.w.registered {
		return
	}
	w := &n.w
	w.hbInFlight = false
	if isErr(err, ErrNodeDead) {
		n.nodeDead(err)
		return
	}
	r, ok := replyAs[HeartbeatReply](v)
	if err != nil || !ok {
		// The liveness timer decides what a run of failures means.
		return
	}
	if p.sent.After(w.lastOK) {
		w.lastOK = p.sent
		w.livenessUntil = n.window(p.sent, n.cfg.DeadAfter)
	}
	if !n.now.Before(w.livenessUntil) {
		return
	}
	if w.fenced {
		w.fenced = false
		n.event("unfenced", "heartbeat succeeded")
	}
	if p.known != w.known {
		// Sent before a self-fence reset the revision: its answer is relative to a list
		// this node no longer follows. Ask again for everything, now.
		w.hbNext = n.now
		return
	}
	if r.Changed {
		n.adoptStoreDrain(p, r.Draining)
		n.reconcile(r.Assignments)
		w.known = r.AssignRevision
		n.noteIncoming(r.Incoming)
		// The rhythm may have changed with what is incoming: count the next heartbeat
		// from this one's send (if that is already past, it goes out at once).
		w.hbNext = p.sent.Add(n.heartbeatInterval())
	}
}

// fastHeartbeat is the heartbeat interval while partitions are coming to this node: a
// fifth of Heartbeat, at least 20ms (and never more than Heartbeat).
func (n *Node) fastHeartbeat() time.Duration {
	return min(n.cfg.Heartbeat, max(n.cfg.Heartbeat/5, 20*time.Millisecond))
}

// heartbeatInterval is Heartbeat, or fastHeartbeat while something is on its way to
// this node. Steady state (nothing moving towards it) keeps one heartbeat per Heartbeat.
// The store keeps a partition in Incoming from its release until it is assigned, so the
// fast rhythm lasts exactly until the assignment is visible to this node's heartbeat.
func (n *Node) heartbeatInterval() time.Duration {
	if len(n.w.incoming) > 0 {
		return n.fastHeartbeat()
	}
	return n.cfg.Heartbeat
}

// noteIncoming records the partitions on their way to this node, from a Changed reply.
func (n *Node) noteIncoming(incoming []PartitionID) {
	w := &n.w
	next := slices.Clone(incoming)
	slices.SortFunc(next, ComparePartitions) // a store (or a simulator) may not sort
	next = slices.Compact(next)
	if len(next) == 0 {
		next = nil
	}
	if !slices.Equal(next, w.incoming) {
		n.event("incoming", describeIncoming(next))
	}
	w.incoming = next
}

// describeIncoming is an event detail: the count and the first few partitions.
func describeIncoming(ps []PartitionID) string {
	const show = 8
	var b strings.Builder
	fmt.Fprintf(&b, "%d partitions", len(ps))
	for i, p := range ps {
		if i == show {
			fmt.Fprintf(&b, ", … (%d more)", len(ps)-show)
			break
		}
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// reconcile makes the running set follow the node's complete list of rows: stop what
// is gone, released or re-generated; acknowledge releases; start what is assigned.
func (n *Node) reconcile(rows []Assignment) {
	w := &n.w
	want := make(map[PartitionID]Assignment, len(rows))
	for _, r := range rows {
		if r.Owner == n.cfg.NodeID && r.Incarnation == w.inc && (r.State == Assigned || r.State == Releasing) {
			if _, dup := want[r.Partition]; !dup {
				want[r.Partition] = r
			}
		}
	}
	w.myRows = len(want)
	for _, p := range n.ownedSorted() {
		gen := w.owned[p]
		r, ok := want[p]
		switch {
		case !ok:
			n.stopPartition(p, StopRevoked)
		case r.State == Releasing:
			n.stopPartition(p, StopReleased)
		case r.Generation != gen:
			n.stopPartition(p, StopRevoked)
		}
	}
	// Forget acks the store no longer waits for.
	for _, p := range sortedKeys(w.acks) {
		r, ok := want[p]
		if !ok || r.State != Releasing || r.Generation != w.acks[p].gen {
			delete(w.acks, p)
		}
	}
	keys := sortedKeys(want)
	for _, p := range keys {
		if r := want[p]; r.State == Releasing {
			if _, ok := w.acks[p]; !ok {
				w.acks[p] = &pendingAck{gen: r.Generation}
			}
		}
	}
	n.sendAcks()
	n.reconcileSupervision(want)
	if !n.now.Before(w.livenessUntil) || n.phase >= phaseFinishing {
		return
	}
	for _, p := range keys {
		r := want[p]
		if r.State != Assigned || n.held(p, r.Generation) {
			continue
		}
		if _, running := w.owned[p]; !running {
			w.owned[p] = r.Generation
			n.emit(StartPartition{Partition: p, Generation: r.Generation})
		}
	}
}

// sendAcks sends every release acknowledgement not already in flight.
func (n *Node) sendAcks() {
	for _, p := range sortedKeys(n.w.acks) {
		a := n.w.acks[p]
		if a.inFlight {
			continue
		}
		a.inFlight = true
		n.send(&pendingReq{kind: rkAck, part: p, gen: a.gen},
			OpAckRelease{Ack: Ack{Partition: p, Node: n.cfg.NodeID, Incarnation: n.w.inc, Generation: a.gen}})
	}
}

func (n *Node) onAck(p *pendingReq, _ any, err error) {
	if p.wgen != n.w.wgen || !n.w.registered {
		return
	}
	a, ok := n.w.acks[p.part]
	if !ok || a.gen != p.gen {
		return
	}
	a.inFlight = false
	switch {
	case err == nil:
		delete(n.w.acks, p.part)
		n.emit(Event{Kind: "release_acked", Node: n.cfg.NodeID, Partition: p.part, Detail: fmt.Sprintf("generation %d", p.gen)})
	case isErr(err, ErrConflict):
		// The row no longer says Releasing for us at that generation: nothing to ack.
		delete(n.w.acks, p.part)
	case isErr(err, ErrNodeDead):
		n.nodeDead(err)
	}
	// Anything else is retried with the next heartbeat.
}

// nodeDead: the store says this incarnation is dead. Its ownership is void: stop
// everything and register again.
func (n *Node) nodeDead(err error) {
	w := &n.w
	n.event("node_dead", fmt.Sprintf("incarnation %d: %v", w.inc, err))
	n.stopAll(StopNodeDead)
	w.registered = false
	w.wgen++
	n.dropPending(func(p *pendingReq) bool { return p.kind.worker() })
	w.hbInFlight, w.drainInFlight, w.registering = false, false, false
	w.acks = map[PartitionID]*pendingAck{}
	n.forgetSupervision()
	w.known, w.myRows, w.fenced = 0, 0, false
	w.incoming = nil
	w.drainSynced = false
	if n.phase < phaseFinishing {
		n.sendRegister()
	}
}

func (n *Node) onDrain(drain bool) {
	if n.phase != phaseRunning && !drain {
		return // a shutdown cannot be undrained
	}
	if n.w.draining == drain {
		return
	}
	n.w.draining = drain
	n.w.drainGen++
	n.w.drainSynced = n.cfg.NoWork // a coordinator-only node has no flag in the store
	n.w.drainedNoted = false
	if drain {
		n.event("draining", "")
	} else {
		n.event("undrained", "")
	}
	n.syncDrainFlag()
}

// adoptStoreDrain follows the store's draining flag, reported by a Changed heartbeat,
// when someone else changed it (an operator's helix drain NODE): the node's own view —
// its readiness, metrics, status and Drained — must not say "not draining" while the
// coordinator moves its partitions away. The node's own wish wins while it is being
// written: the report counts only if nothing happened to the flag on this side since
// the heartbeat was sent. A shutdown's drain is never undone this way.
func (n *Node) adoptStoreDrain(p *pendingReq, draining bool) {
	w := &n.w
	if n.phase != phaseRunning || n.cfg.NoWork || draining == w.draining ||
		p.drainGen != w.drainGen || !w.drainSynced || w.drainInFlight {
		return
	}
	w.draining = draining
	w.drainGen++
	w.drainedNoted = false
	if draining {
		n.event("draining", "store flag set by another client (helix drain)")
	} else {
		n.event("undrained", "store flag cleared by another client (helix drain --undrain)")
	}
}

func (n *Node) syncDrainFlag() {
	w := &n.w
	if !w.registered || w.drainSynced || w.drainInFlight {
		return
	}
	v := w.draining
	w.drainInFlight = true
	w.drainGen++
	n.send(&pendingReq{kind: rkDrainFlag, draining: v}, OpUpdateNode{ID: n.cfg.NodeID, Update: NodeUpdate{Incarnation: n.w.inc, Draining: &v}})
}

func (n *Node) onDrainFlag(p *pendingReq, _ any, err error) {
	if p.wgen != n.w.wgen {
		return
	}
	n.w.drainInFlight = false
	n.w.drainGen++
	if err != nil {
		return // retried with the next heartbeat
	}
	if p.draining == n.w.draining {
		n.w.drainSynced = true
	} else {
		n.syncDrainFlag()
	}
}

// drained: draining, the store's flag confirmed, nothing running and no row left.
func (n *Node) drained() bool {
	if n.cfg.NoWork {
		return n.w.draining || n.phase != phaseRunning // it never owns anything
	}
	w := &n.w
	return w.draining && w.drainSynced && w.registered && len(w.owned) == 0 && w.myRows == 0 && len(w.acks) == 0
}

func (n *Node) noteDrained() {
	d := n.drained()
	if d && !n.w.drainedNoted {
		n.event("drained", "")
	}
	n.w.drainedNoted = d
}

func (n *Node) stopPartition(p PartitionID, why StopReason) {
	gen, ok := n.w.owned[p]
	if !ok {
		return
	}
	delete(n.w.owned, p)
	n.emit(StopPartition{Partition: p, Generation: gen, Reason: why})
}

func (n *Node) stopAll(why StopReason) {
	for _, p := range n.ownedSorted() {
		n.stopPartition(p, why)
	}
}

func (n *Node) ownedSorted() []PartitionID { return sortedKeys(n.w.owned) }

func sortedKeys[V any](m map[PartitionID]V) []PartitionID {
	ks := make([]PartitionID, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, ComparePartitions)
	return ks
}

func errString(err error) string {
	if err == nil {
		return "malformed reply"
	}
	return err.Error()
}
