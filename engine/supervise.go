package engine

import (
	"fmt"
	"time"
)

// Supervision of partition handlers, the worker's side. The driver reports a handler
// that failed (returned before its partition was stopped, or panicked) with the
// PartitionFailed input. The node then restarts it after a jittered backoff, with the
// same generation, as long as the row is still Assigned to this incarnation and the node
// may process (registered, not fenced, not shutting down). After Config.GiveBackAfter
// failures within Config.GiveBackWindow it gives the partition back instead
// (Store.GiveBack), and the coordinator places it on another node (giveback.go).
//
// It lives in the state machine, not in the driver, so that restarts obey the same
// liveness rules as every start, and so that the simulator runs the very same policy.

// PartitionFailed tells the node that the handler of a partition it started failed.
// Reason is for logs and status ("returned: …", "panic: …"). A report for a partition
// the node does not run at that generation is ignored.
type PartitionFailed struct {
	Partition  PartitionID
	Generation uint64
	Reason     string
}

func (PartitionFailed) isInput() {}

// SupervisedPartition is the supervision state of a partition whose handler failed on
// this node within the last GiveBackWindow.
type SupervisedPartition struct {
	Partition  PartitionID
	Generation uint64
	// State: "running" (restarted, running again), "restarting" (waiting for
	// NextAttempt, node clock) or "giving_back".
	State       string
	Failures    int // within GiveBackWindow
	NextAttempt time.Time
	LastError   string
}

// GivenBackPartition is a partition this node gave back, and when (node clock).
type GivenBackPartition struct {
	Partition  PartitionID
	Generation uint64
	At         time.Time
}

// Supervision states, as SupervisedPartition.State says them.
const (
	SupRunning    = "running"
	SupRestarting = "restarting"
	SupGivingBack = "giving_back"
)

type supervised struct {
	gen        uint64
	failures   []time.Time // within the window, oldest first
	next       time.Time
	restarting bool
	givingBack bool
	inFlight   bool // the give-back request
	lastErr    string
}

func (c Config) validateSupervision() error {
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"config.RestartBase", c.RestartBase}, {"config.RestartMax", c.RestartMax},
		{"config.GiveBackWindow", c.GiveBackWindow}, {"config.GiveBackCoolDown", c.GiveBackCoolDown},
	} {
		if f.d <= 0 {
			return Invalid(f.name, f.d.String(), "must be > 0")
		}
	}
	if c.RestartMax < c.RestartBase {
		return Invalid("config.RestartMax", c.RestartMax.String(), fmt.Sprintf("must be ≥ RestartBase (%v)", c.RestartBase))
	}
	if c.RestartJitter < 0 || c.RestartJitter >= 1 {
		return Invalid("config.RestartJitter", fmt.Sprint(c.RestartJitter), "must be in [0, 1)")
	}
	if c.GiveBackAfter < NeverGiveBack {
		return Invalid("config.GiveBackAfter", fmt.Sprint(c.GiveBackAfter), "must be ≥ 1, or NeverGiveBack (-1)")
	}
	return nil
}

// RestartDelay is the backoff before the restart that follows the k-th failure (k ≥ 1)
// within the window, before jitter: RestartBase·2^(k−1), or RestartBase·k when
// RestartLinear, never more than RestartMax.
func (c Config) RestartDelay(k int) time.Duration {
	k = max(k, 1)
	if c.RestartLinear {
		if time.Duration(k) > c.RestartMax/max(c.RestartBase, 1) {
			return c.RestartMax
		}
		return min(c.RestartBase*time.Duration(k), c.RestartMax)
	}
	d := c.RestartBase
	for i := 1; i < k && d < c.RestartMax; i++ {
		d *= 2
	}
	return min(d, c.RestartMax)
}

// restartDelay is RestartDelay ± RestartJitter, drawn from the node's PRNG, capped at
// RestartMax: nodes whose handlers fail together do not restart in lockstep.
func (n *Node) restartDelay(k int) time.Duration {
	d := n.cfg.RestartDelay(k)
	j := (2*n.rng.Float64() - 1) * n.cfg.RestartJitter
	return min(time.Duration(float64(d)*(1+j)), n.cfg.RestartMax)
}

func (n *Node) onPartitionFailed(in PartitionFailed) {
	w := &n.w
	gen, ok := w.owned[in.Partition]
	if !ok || gen != in.Generation {
		return // stopped already, or an older generation's handler
	}
	n.stopPartition(in.Partition, StopFailed)
	s := w.sup[in.Partition]
	if s == nil || s.gen != in.Generation {
		s = &supervised{gen: in.Generation}
		w.sup[in.Partition] = s
	}
	from := n.now.Add(-n.cfg.GiveBackWindow)
	keep := s.failures[:0]
	for _, t := range s.failures {
		if t.After(from) {
			keep = append(keep, t)
		}
	}
	s.failures = append(keep, n.now)
	s.lastErr = in.Reason
	k := len(s.failures)
	if n.cfg.GiveBackAfter > 0 && k >= n.cfg.GiveBackAfter {
		s.givingBack = true
		n.emit(Event{Kind: "partition_failed", Node: n.cfg.NodeID, Partition: in.Partition,
			Detail: fmt.Sprintf("generation %d, failure %d within %v, giving it back: %s", in.Generation, k, n.cfg.GiveBackWindow, in.Reason)})
		n.sendGiveBacks()
		return
	}
	s.restarting = true
	s.next = n.now.Add(n.restartDelay(k))
	n.emit(Event{Kind: "partition_failed", Node: n.cfg.NodeID, Partition: in.Partition,
		Detail: fmt.Sprintf("generation %d, failure %d within %v, restart at %v: %s", in.Generation, k, n.cfg.GiveBackWindow, s.next, in.Reason)})
}

// mayStart: the node may start (or restart) partitions now.
func (n *Node) mayStart() bool {
	w := &n.w
	return w.registered && !w.fenced && n.now.Before(w.livenessUntil) && n.phase < phaseFinishing
}

// supervisionTimers restarts the partitions whose backoff has ended.
func (n *Node) supervisionTimers() {
	w := &n.w
	if len(w.sup) == 0 || !n.mayStart() {
		return
	}
	for _, p := range sortedKeys(w.sup) {
		s := w.sup[p]
		if !s.restarting && !s.givingBack && !s.failures[len(s.failures)-1].After(n.now.Add(-n.cfg.GiveBackWindow)) {
			delete(w.sup, p) // running again, and its last failure has left the window
			continue
		}
		if !s.restarting || n.now.Before(s.next) {
			continue
		}
		s.restarting = false
		w.owned[p] = s.gen
		n.emit(Event{Kind: "partition_restarted", Node: n.cfg.NodeID, Partition: p,
			Detail: fmt.Sprintf("generation %d after %d failures", s.gen, len(s.failures))})
		n.emit(StartPartition{Partition: p, Generation: s.gen})
	}
}

func (n *Node) supervisionWake(add func(time.Time)) {
	if !n.mayStart() {
		return
	}
	for _, s := range n.w.sup {
		if s.restarting {
			add(s.next)
		}
	}
}

// held reports whether reconcile must not start p: it is waiting for its restart or
// being given back.
func (n *Node) held(p PartitionID, gen uint64) bool {
	s := n.w.sup[p]
	return s != nil && s.gen == gen && (s.restarting || s.givingBack)
}

// reconcileSupervision forgets the supervision of partitions whose row is gone,
// releasing or re-generated (a Releasing row is acknowledged by the ack logic: its
// failed handler is not running). rows are the node's rows by partition.
func (n *Node) reconcileSupervision(want map[PartitionID]Assignment) {
	if len(n.w.sup) == 0 && len(n.w.givenBack) == 0 {
		return
	}
	for _, p := range sortedKeys(n.w.sup) {
		s := n.w.sup[p]
		r, ok := want[p]
		if !ok || r.State != Assigned || r.Generation != s.gen {
			delete(n.w.sup, p)
		}
	}
	n.trimGivenBack()
}

func (n *Node) trimGivenBack() {
	for _, p := range sortedKeys(n.w.givenBack) {
		if !n.now.Before(n.w.givenBack[p].At.Add(n.cfg.GiveBackCoolDown)) {
			delete(n.w.givenBack, p)
		}
	}
}

// forgetSupervision drops every supervision state: the incarnation ended.
func (n *Node) forgetSupervision() {
	n.w.sup = map[PartitionID]*supervised{}
}

// sendGiveBacks sends every give-back not already in flight (retried with heartbeats).
func (n *Node) sendGiveBacks() {
	w := &n.w
	if !w.registered || len(w.sup) == 0 {
		return
	}
	for _, p := range sortedKeys(w.sup) {
		s := w.sup[p]
		if !s.givingBack || s.inFlight {
			continue
		}
		s.inFlight = true
		n.send(&pendingReq{kind: rkGiveBack, part: p, gen: s.gen},
			OpGiveBack{GiveBack: Ack{Partition: p, Node: n.cfg.NodeID, Incarnation: w.inc, Generation: s.gen}})
	}
}

func (n *Node) onGiveBack(p *pendingReq, _ any, err error) {
	if p.wgen != n.w.wgen || !n.w.registered {
		return
	}
	s := n.w.sup[p.part]
	if s == nil || s.gen != p.gen {
		return
	}
	s.inFlight = false
	switch {
	case err == nil:
		delete(n.w.sup, p.part)
		n.w.givenBack[p.part] = GivenBackPartition{Partition: p.part, Generation: p.gen, At: n.now}
		n.emit(Event{Kind: "given_back", Node: n.cfg.NodeID, Partition: p.part, Detail: fmt.Sprintf("generation %d", p.gen)})
		// The heartbeat reply will carry the changed list; ask for it now.
		n.w.hbNext = n.now
	case isErr(err, ErrConflict), isErr(err, ErrNotFound):
		// The row is no longer ours at that generation (released, reassigned): nothing
		// to give back.
		delete(n.w.sup, p.part)
	case isErr(err, ErrNodeDead):
		n.nodeDead(err)
	}
	// Anything else (unavailable, timeout: maybe applied) is retried with the next
	// heartbeat; a retry after an applied one gets ErrConflict, which ends it too.
}

func (n *Node) supervisionState(s *NodeState) {
	s.Failing = n.failingSorted()
	if len(n.w.sup) == 0 && len(n.w.givenBack) == 0 {
		return
	}
	for _, p := range sortedKeys(n.w.sup) {
		x := n.w.sup[p]
		st := SupRunning
		switch {
		case x.givingBack:
			st = SupGivingBack
		case x.restarting:
			st = SupRestarting
		}
		sp := SupervisedPartition{Partition: p, Generation: x.gen, State: st, Failures: len(x.failures), LastError: x.lastErr}
		if x.restarting {
			sp.NextAttempt = x.next
		}
		s.Supervised = append(s.Supervised, sp)
	}
	for _, p := range sortedKeys(n.w.givenBack) {
		s.GivenBack = append(s.GivenBack, n.w.givenBack[p])
	}
}
