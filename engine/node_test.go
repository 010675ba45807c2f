package engine_test

// Scripted single-node tests: one Node, inputs written out by hand, effects checked.
// Times are offsets from t0 (see driver_test.go); with the default config a right
// counted from time s ends at s + 6s·0.99 − 100ms = s + 5.84s (lease) and
// s + 5s·0.99 − 100ms = s + 4.85s (liveness).

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
)

const ms = time.Millisecond

type script struct {
	t      *testing.T
	n      *engine.Node
	now    time.Duration // offset from t0
	lastID uint64
	effs   []engine.Effect // of the last step
}

// meOwner is the lease owner token of the scripts' node: id "me", nonce "p1".
const meOwner = "me#p1"

func newScript(t *testing.T, cfg engine.Config, seed uint64) *script {
	t.Helper()
	if cfg.NodeID == "" {
		cfg.NodeID = "me"
	}
	if cfg.Nonce == "" {
		cfg.Nonce = "p1" // the scripts' process: lease owner meOwner
	}
	n, err := engine.NewNode(cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	return &script{t: t, n: n}
}

// at steps the node at offset off with input in and checks the invariants every step
// must keep: request IDs grow, deadlines are now + RequestTimeout, exactly one WakeAt
// in the future (unless stopped).
func (s *script) at(off time.Duration, in engine.Input) []engine.Effect {
	s.t.Helper()
	s.now = off
	now := t0.Add(off)
	s.effs = s.n.Step(now, in)
	wakes := 0
	for _, e := range s.effs {
		switch e := e.(type) {
		case engine.StoreRequest:
			if e.ID <= s.lastID {
				s.t.Fatalf("at %v: request ID %d not above %d", off, e.ID, s.lastID)
			}
			s.lastID = e.ID
			if want := now.Add(engine.DefaultConfig().RequestTimeout); !e.Deadline.Equal(want) {
				s.t.Errorf("at %v: deadline %v, want now+RequestTimeout", off, e.Deadline.Sub(t0))
			}
		case engine.WakeAt:
			wakes++
			if !e.At.After(now) {
				s.t.Errorf("at %v: WakeAt %v not in the future", off, e.At.Sub(t0))
			}
		}
	}
	if !s.n.State().Stopped && wakes != 1 {
		s.t.Errorf("at %v: %d WakeAt effects, want 1", off, wakes)
	}
	return s.effs
}

func (s *script) tick(off time.Duration) []engine.Effect { return s.at(off, engine.Tick{}) }

func (s *script) reply(off time.Duration, id uint64, v any, err error) []engine.Effect {
	return s.at(off, engine.StoreReply{ID: id, Value: v, Err: err})
}

func (s *script) wake() time.Duration {
	for _, e := range s.effs {
		if w, ok := e.(engine.WakeAt); ok {
			return w.At.Sub(t0)
		}
	}
	s.t.Fatalf("at %v: no WakeAt", s.now)
	return 0
}

// req returns the only request whose Op is a T among the last effects.
func req[T engine.Op](s *script) (uint64, T) {
	s.t.Helper()
	var id uint64
	var op T
	found := 0
	for _, e := range s.effs {
		if r, ok := e.(engine.StoreRequest); ok {
			if o, ok := r.Op.(T); ok {
				id, op = r.ID, o
				found++
			}
		}
	}
	if found != 1 {
		s.t.Fatalf("at %v: %d %T requests, want 1; effects: %s", s.now, found, op, describe(s.effs))
	}
	return id, op
}

func noReq[T engine.Op](s *script) {
	s.t.Helper()
	for _, e := range s.effs {
		if r, ok := e.(engine.StoreRequest); ok {
			if _, ok := r.Op.(T); ok {
				s.t.Fatalf("at %v: unexpected %T request: %s", s.now, r.Op, describe(s.effs))
			}
		}
	}
}

func hasEvent(effs []engine.Effect, kind string) bool {
	for _, e := range effs {
		if ev, ok := e.(engine.Event); ok && ev.Kind == kind {
			return true
		}
	}
	return false
}

func starts(effs []engine.Effect) []engine.StartPartition {
	var out []engine.StartPartition
	for _, e := range effs {
		if x, ok := e.(engine.StartPartition); ok {
			out = append(out, x)
		}
	}
	return out
}

func stops(effs []engine.Effect) []engine.StopPartition {
	var out []engine.StopPartition
	for _, e := range effs {
		if x, ok := e.(engine.StopPartition); ok {
			out = append(out, x)
		}
	}
	return out
}

func describe(effs []engine.Effect) string {
	s := ""
	for _, e := range effs {
		switch e := e.(type) {
		case engine.StoreRequest:
			s += fmt.Sprintf("[req %d %s %+v] ", e.ID, e.Op.Name(), e.Op)
		case engine.WakeAt:
			s += fmt.Sprintf("[wake %v] ", e.At.Sub(t0))
		default:
			s += fmt.Sprintf("[%T %+v] ", e, e)
		}
	}
	return s
}

func store(off time.Duration) engine.Reply { return engine.Reply{Now: t0.Add(off)} }

func part(i int) engine.PartitionID {
	return engine.PartitionID{Domain: "d", TaskList: "orders", Partition: i}
}

func row(i int, owner string, inc, gen uint64, st engine.PartitionState, rev uint64) engine.Assignment {
	return engine.Assignment{Partition: part(i), Owner: owner, Incarnation: inc, Generation: gen, State: st, Revision: rev}
}

var (
	errUnavailable = fmt.Errorf("test: %w", engine.ErrUnavailable)
	errNodeDead    = fmt.Errorf("test: %w", engine.ErrNodeDead)
)

// registered returns a worker-only node registered at 0 (reply at 10ms) with
// incarnation 7; the first heartbeat is due at 1s.
func registered(t *testing.T) *script {
	s := newScript(t, engine.Config{NoCandidate: true}, 1)
	s.tick(0)
	id, op := req[engine.OpRegisterNode](s)
	if op.Spec.ID != "me" || op.Spec.Capacity != 1 {
		t.Fatalf("register spec %+v", op.Spec)
	}
	s.reply(10*ms, id, engine.RegisterReply{Reply: store(5 * ms), Incarnation: 7}, nil)
	if !hasEvent(s.effs, "registered") {
		t.Fatalf("no registered event: %s", describe(s.effs))
	}
	return s
}

// heartbeatWith runs the heartbeat due at off and answers it at off+10ms with rows.
func heartbeatWith(s *script, off time.Duration, rev uint64, rows ...engine.Assignment) []engine.Effect {
	s.t.Helper()
	s.tick(off)
	id, _ := req[engine.OpHeartbeat](s)
	// The store's draining flag is the one the node wrote (nobody else changed it).
	draining := s.n.State().Draining
	return s.reply(off+10*ms, id, engine.HeartbeatReply{Reply: store(off + 5*ms), AssignRevision: rev, Changed: true, Assignments: rows, Draining: draining}, nil)
}

// TestNodeFollowsAnOperatorsDrain: the store's flag, changed by someone else (helix
// drain NODE), reaches the node with a Changed heartbeat and becomes its own state —
// but never while the node's own write of the flag is pending, nor from a heartbeat
// sent before such a write.
func TestNodeFollowsAnOperatorsDrain(t *testing.T) {
	s := registered(t)
	heartbeatWith(s, time.Second, 2, row(0, "me", 7, 3, engine.Assigned, 10))
	hb := func(off time.Duration, rev uint64, draining bool) []engine.Effect {
		s.t.Helper()
		s.tick(off)
		id, _ := req[engine.OpHeartbeat](s)
		return s.reply(off+10*ms, id, engine.HeartbeatReply{Reply: store(off + 5*ms), AssignRevision: rev, Changed: true,
			Assignments: []engine.Assignment{row(0, "me", 7, 3, engine.Assigned, 10)}, Draining: draining}, nil)
	}
	effs := hb(2*time.Second, 3, true)
	if !hasEvent(effs, "draining") || !s.n.State().Draining {
		t.Fatalf("an operator's drain did not reach the node: %s %+v", describe(effs), s.n.State())
	}
	noReq[engine.OpUpdateNode](s) // the store has the flag: nothing to write back
	effs = hb(3*time.Second, 4, false)
	if !hasEvent(effs, "undrained") || s.n.State().Draining {
		t.Fatalf("an operator's undrain did not reach the node: %s %+v", describe(effs), s.n.State())
	}

	// The node drains itself; a heartbeat sent before its write completes reports the
	// old flag and must not undo the node's wish.
	s.at(3500*ms, engine.Drain{})
	upID, _ := req[engine.OpUpdateNode](s)
	s.tick(4 * time.Second)
	hbID, _ := req[engine.OpHeartbeat](s)
	s.reply(4010*ms, upID, engine.Reply{Now: store(4005 * ms).Now}, nil)
	s.reply(4020*ms, hbID, engine.HeartbeatReply{Reply: store(4015 * ms), AssignRevision: 5, Changed: true,
		Assignments: []engine.Assignment{row(0, "me", 7, 3, engine.Assigned, 10)}, Draining: false}, nil)
	if !s.n.State().Draining {
		t.Fatalf("a stale heartbeat undid the node's own drain: %+v", s.n.State())
	}
}

func TestNodeRegistersAndHeartbeats(t *testing.T) {
	s := registered(t)
	st := s.n.State()
	if !st.Registered || st.Incarnation != 7 {
		t.Fatalf("state after registration: %+v", st)
	}
	// Liveness counts from the registration's send (0), not its reply (10ms).
	if got := st.LivenessUntil.Sub(t0); got != 4850*ms {
		t.Errorf("LivenessUntil %v, want 4.85s", got)
	}
	if w := s.wake(); w != time.Second {
		t.Errorf("next wake %v, want the heartbeat at 1s", w)
	}
	s.tick(999 * ms)
	noReq[engine.OpHeartbeat](s)
	s.tick(time.Second)
	id, hb := req[engine.OpHeartbeat](s)
	if hb.ID != "me" || hb.Incarnation != 7 || hb.Known != 0 {
		t.Errorf("heartbeat %+v", hb)
	}
	// One heartbeat in flight at a time: at 1.5s nothing new even if woken.
	s.tick(1500 * ms)
	noReq[engine.OpHeartbeat](s)
	// A reply at 1.8s counts from the send at 1s.
	s.reply(1800*ms, id, engine.HeartbeatReply{Reply: store(1100 * ms), AssignRevision: 3, Changed: true}, nil)
	if got := s.n.State().LivenessUntil.Sub(t0); got != 5850*ms {
		t.Errorf("LivenessUntil %v, want 1s + 4.85s", got)
	}
	// The next heartbeat is due one interval after the previous send, with Known.
	if w := s.wake(); w != 2*time.Second {
		t.Errorf("next wake %v, want 2s", w)
	}
	s.tick(2 * time.Second)
	_, hb = req[engine.OpHeartbeat](s)
	if hb.Known != 3 {
		t.Errorf("Known = %d, want the revision of the last list (3)", hb.Known)
	}
}

func TestNodeFollowsAssignments(t *testing.T) {
	s := registered(t)
	effs := heartbeatWith(s, time.Second, 2, row(0, "me", 7, 3, engine.Assigned, 10), row(1, "me", 7, 1, engine.Assigned, 11),
		row(2, "other", 7, 1, engine.Assigned, 12), row(3, "me", 6, 1, engine.Assigned, 13))
	got := starts(effs)
	want := []engine.StartPartition{{Partition: part(0), Generation: 3}, {Partition: part(1), Generation: 1}}
	if !slices.Equal(got, want) {
		t.Fatalf("starts %v, want %v (rows of other owners or incarnations ignored)", got, want)
	}
	// Same list again: nothing. New generation for p1: restart. p0 gone: revoked.
	effs = heartbeatWith(s, 2*time.Second, 3, row(1, "me", 7, 2, engine.Assigned, 20))
	if got := stops(effs); !slices.Equal(got, []engine.StopPartition{
		{Partition: part(0), Generation: 3, Reason: engine.StopRevoked},
		{Partition: part(1), Generation: 1, Reason: engine.StopRevoked},
	}) {
		t.Errorf("stops %v", got)
	}
	if got := starts(effs); !slices.Equal(got, []engine.StartPartition{{Partition: part(1), Generation: 2}}) {
		t.Errorf("starts %v", got)
	}
	st := s.n.State()
	if len(st.Owned) != 1 || st.Owned[0].Partition != part(1) || st.Owned[0].Generation != 2 {
		t.Errorf("owned %+v", st.Owned)
	}
	// Unchanged reply: nothing happens.
	s.tick(3 * time.Second)
	id, hb := req[engine.OpHeartbeat](s)
	if hb.Known != 3 {
		t.Errorf("known %d", hb.Known)
	}
	effs = s.reply(3010*ms, id, engine.HeartbeatReply{Reply: store(3005 * ms), AssignRevision: 3}, nil)
	if len(starts(effs))+len(stops(effs)) != 0 {
		t.Errorf("unchanged heartbeat changed partitions: %s", describe(effs))
	}
}

func TestNodeSelfFence(t *testing.T) {
	s := registered(t)
	heartbeatWith(s, time.Second, 2, row(0, "me", 7, 3, engine.Assigned, 10))
	// Every later heartbeat fails: refused as unavailable, or lost and timed out
	// by the node itself at its deadline.
	for i := 2; i <= 4; i++ {
		off := time.Duration(i) * time.Second
		s.tick(off)
		id, _ := req[engine.OpHeartbeat](s)
		if i%2 == 0 {
			s.reply(off+50*ms, id, nil, errUnavailable)
		} else {
			s.tick(off + 900*ms)
		}
		if len(stops(s.effs)) != 0 {
			t.Fatalf("stopped early at %v", s.now)
		}
	}
	s.tick(5 * time.Second) // a heartbeat in flight does not extend anything
	req[engine.OpHeartbeat](s)
	// Last success was sent at 1s: liveness ends at exactly 5.85s.
	if got := s.n.State().LivenessUntil.Sub(t0); got != 5850*ms {
		t.Fatalf("LivenessUntil %v", got)
	}
	effs := s.tick(5850*ms - 1)
	if len(stops(effs)) != 0 {
		t.Fatalf("stopped 1ns early")
	}
	effs = s.tick(5850 * ms)
	if got := stops(effs); !slices.Equal(got, []engine.StopPartition{{Partition: part(0), Generation: 3, Reason: engine.StopSelfFenced}}) {
		t.Fatalf("at 5.85s stops %v, want p0 self-fenced", got)
	}
	if !hasEvent(effs, "self_fenced") || len(s.n.State().Owned) != 0 {
		t.Fatalf("self-fence: %s %+v", describe(effs), s.n.State())
	}
	// It keeps heartbeating; the in-flight one (sent at 5s with Known=2) succeeds
	// but its answer is relative to the old list: the node asks again with
	// Known=0 at once, and only that full list restarts p0.
	s.tick(6 * time.Second)
	id, hb := req[engine.OpHeartbeat](s)
	if hb.Known != 0 {
		t.Fatalf("heartbeat after fence has Known %d, want 0 (full refresh)", hb.Known)
	}
	effs = s.reply(6010*ms, id, engine.HeartbeatReply{Reply: store(6005 * ms), AssignRevision: 2, Changed: true,
		Assignments: []engine.Assignment{row(0, "me", 7, 3, engine.Assigned, 10)}}, nil)
	if got := starts(effs); !slices.Equal(got, []engine.StartPartition{{Partition: part(0), Generation: 3}}) {
		t.Fatalf("after a successful heartbeat starts %v", got)
	}
	if got := s.n.State().LivenessUntil.Sub(t0); got != 10850*ms {
		t.Errorf("LivenessUntil %v, want 10.85s", got)
	}
}

// A heartbeat sent before the fence with the old Known and answered after it must not
// be trusted for the list: the node re-asks with Known=0.
func TestNodeSelfFenceStaleKnown(t *testing.T) {
	s := registered(t)
	heartbeatWith(s, time.Second, 2, row(0, "me", 7, 3, engine.Assigned, 10))
	for i := 2; i <= 4; i++ {
		off := time.Duration(i) * time.Second
		s.tick(off)
		id, _ := req[engine.OpHeartbeat](s)
		s.reply(off+10*ms, id, nil, errUnavailable)
	}
	s.tick(5 * time.Second)
	id, hb := req[engine.OpHeartbeat](s) // Known = 2, sent before the fence
	if hb.Known != 2 {
		t.Fatalf("known %d", hb.Known)
	}
	s.tick(5850 * ms) // fence
	if len(stops(s.effs)) != 1 {
		t.Fatalf("no fence: %s", describe(s.effs))
	}
	effs := s.reply(5860*ms, id, engine.HeartbeatReply{Reply: store(5100 * ms), AssignRevision: 2}, nil)
	if len(starts(effs)) != 0 {
		t.Fatalf("restarted from a stale answer")
	}
	id, hb = req[engine.OpHeartbeat](s)
	if hb.Known != 0 {
		t.Fatalf("re-ask has Known %d, want 0", hb.Known)
	}
	effs = s.reply(5870*ms, id, engine.HeartbeatReply{Reply: store(5865 * ms), AssignRevision: 2, Changed: true,
		Assignments: []engine.Assignment{row(0, "me", 7, 3, engine.Assigned, 10)}}, nil)
	if len(starts(effs)) != 1 {
		t.Fatalf("not restarted after the full list: %s", describe(effs))
	}
}

func TestNodeDeadReregisters(t *testing.T) {
	s := registered(t)
	heartbeatWith(s, time.Second, 2, row(0, "me", 7, 3, engine.Assigned, 10), row(1, "me", 7, 4, engine.Assigned, 11))
	s.tick(2 * time.Second)
	id, _ := req[engine.OpHeartbeat](s)
	effs := s.reply(2010*ms, id, nil, errNodeDead)
	if got := stops(effs); len(got) != 2 || got[0].Reason != engine.StopNodeDead || got[1].Reason != engine.StopNodeDead {
		t.Fatalf("stops %v, want both node-dead", got)
	}
	if !hasEvent(effs, "node_dead") {
		t.Error("no node_dead event")
	}
	rid, _ := req[engine.OpRegisterNode](s)
	if st := s.n.State(); st.Registered || len(st.Owned) != 0 {
		t.Errorf("state %+v", st)
	}
	s.reply(2020*ms, rid, engine.RegisterReply{Reply: store(2015 * ms), Incarnation: 8}, nil)
	st := s.n.State()
	// Counted from the registration's send at 2.01s.
	if !st.Registered || st.Incarnation != 8 || st.LivenessUntil.Sub(t0) != 2010*ms+4850*ms {
		t.Errorf("after re-registration: %+v", st)
	}
	// Rows of the old incarnation are not ours any more.
	effs = heartbeatWith(s, 3010*ms, 5, row(0, "me", 7, 3, engine.Assigned, 10), row(2, "me", 8, 1, engine.Assigned, 12))
	if got := starts(effs); !slices.Equal(got, []engine.StartPartition{{Partition: part(2), Generation: 1}}) {
		t.Errorf("starts %v, want only p2 (incarnation 8)", got)
	}
}

func TestNodeReleaseStopsThenAcks(t *testing.T) {
	s := registered(t)
	heartbeatWith(s, time.Second, 2, row(0, "me", 7, 3, engine.Assigned, 10))
	rel := row(0, "me", 7, 3, engine.Releasing, 20)
	rel.Target = "other"
	effs := heartbeatWith(s, 2*time.Second, 3, rel)
	// The stop comes before the acknowledgement.
	stopAt, ackAt := -1, -1
	for i, e := range effs {
		switch e := e.(type) {
		case engine.StopPartition:
			if e.Reason != engine.StopReleased || e.Partition != part(0) {
				t.Errorf("stop %+v", e)
			}
			stopAt = i
		case engine.StoreRequest:
			if a, ok := e.Op.(engine.OpAckRelease); ok {
				ackAt = i
				if a.Ack != (engine.Ack{Partition: part(0), Node: "me", Incarnation: 7, Generation: 3}) {
					t.Errorf("ack %+v", a.Ack)
				}
			}
		}
	}
	if stopAt < 0 || ackAt < 0 || stopAt > ackAt {
		t.Fatalf("want stop then ack: %s", describe(effs))
	}
	ackID, _ := req[engine.OpAckRelease](s)
	// The ack is lost: it is retried with the next heartbeat, not before.
	s.reply(2100*ms, ackID, nil, errUnavailable)
	noReq[engine.OpAckRelease](s)
	s.tick(3 * time.Second)
	hbID, _ := req[engine.OpHeartbeat](s)
	ackID, _ = req[engine.OpAckRelease](s)
	s.reply(3010*ms, hbID, engine.HeartbeatReply{Reply: store(3005 * ms), AssignRevision: 3}, nil)
	s.reply(3020*ms, ackID, engine.Reply{Now: t0.Add(3015 * ms)}, nil)
	if !hasEvent(s.effs, "release_acked") {
		t.Errorf("no release_acked: %s", describe(s.effs))
	}
	// Acked: no more acks even while the list still says Releasing... until a new list.
	s.tick(4 * time.Second)
	noReq[engine.OpAckRelease](s)
}

// A conflicting ack (the row changed) is dropped, not retried.
func TestNodeAckConflictDropped(t *testing.T) {
	s := registered(t)
	heartbeatWith(s, time.Second, 2, row(0, "me", 7, 3, engine.Releasing, 20))
	ackID, _ := req[engine.OpAckRelease](s)
	s.reply(1100*ms, ackID, nil, fmt.Errorf("x: %w", engine.ErrConflict))
	s.tick(2 * time.Second)
	noReq[engine.OpAckRelease](s)
}

func TestNodeRequestTimeout(t *testing.T) {
	s := newScript(t, engine.Config{NoCandidate: true}, 1)
	s.tick(0)
	id, _ := req[engine.OpRegisterNode](s)
	if w := s.wake(); w != 900*ms {
		t.Errorf("wake %v, want the request deadline 900ms", w)
	}
	effs := s.tick(900 * ms)
	if !hasEvent(effs, "register_failed") {
		t.Fatalf("no timeout at the deadline: %s", describe(effs))
	}
	// The late reply is ignored.
	effs = s.reply(950*ms, id, engine.RegisterReply{Reply: store(10 * ms), Incarnation: 1}, nil)
	if hasEvent(effs, "registered") || s.n.State().Registered {
		t.Fatal("a reply after the deadline was used")
	}
	// Unknown IDs are ignored too.
	s.reply(960*ms, 12345, engine.RegisterReply{Incarnation: 1}, nil)
	if s.n.State().Registered {
		t.Fatal("unknown ID used")
	}
	// Retry one heartbeat interval after the failure, with a new ID.
	s.tick(1899 * ms)
	noReq[engine.OpRegisterNode](s)
	s.tick(1900 * ms)
	id2, _ := req[engine.OpRegisterNode](s)
	if id2 <= id {
		t.Errorf("new ID %d not above %d", id2, id)
	}
}

// candidate returns a coordinator-only node that acquired the lease at epoch 4: the
// acquire was sent at 0 and answered at 50ms.
func candidate(t *testing.T) *script {
	s := newScript(t, engine.Config{NoWork: true}, 1)
	s.tick(0)
	id, op := req[engine.OpAcquireLease](s)
	if op.Key != "coordinator" || op.Owner != meOwner || op.TTL != 6*time.Second {
		t.Fatalf("acquire %+v", op)
	}
	s.reply(50*ms, id, engine.LeaseReply{Reply: store(20 * ms), Lease: engine.Lease{Key: "coordinator", Owner: meOwner, Epoch: 4, Status: engine.LeaseActive, ExpiresAt: t0.Add(6020 * ms)}}, nil)
	if !hasEvent(s.effs, "became_coordinator") {
		t.Fatalf("not coordinator: %s", describe(s.effs))
	}
	return s
}

func TestNodeLeaseAcquireRenewStepDown(t *testing.T) {
	s := candidate(t)
	st := s.n.State()
	if !st.Coordinator || st.Epoch != 4 {
		t.Fatalf("state %+v", st)
	}
	// Counted from the send (0): 5.84s, not from the reply (5.89s).
	if got := st.LeaseUntil.Sub(t0); got != 5840*ms {
		t.Errorf("LeaseUntil %v, want 5.84s", got)
	}
	// It reads the full state at once.
	_, rs := req[engine.OpReadState](s)
	if rs.Since != 0 {
		t.Errorf("first read since %d, want 0 (full)", rs.Since)
	}
	// Renewal is due RenewInterval after the acquire's send.
	s.tick(1999 * ms)
	noReq[engine.OpRenewLease](s)
	s.tick(2 * time.Second)
	id, rn := req[engine.OpRenewLease](s)
	if rn.Epoch != 4 || rn.Owner != meOwner || rn.TTL != 6*time.Second {
		t.Errorf("renew %+v", rn)
	}
	s.reply(2500*ms, id, engine.LeaseReply{Reply: store(2100 * ms), Lease: engine.Lease{Key: "coordinator", Owner: meOwner, Epoch: 4, Status: engine.LeaseActive}}, nil)
	if got := s.n.State().LeaseUntil.Sub(t0); got != 7840*ms {
		t.Errorf("after renewal LeaseUntil %v, want 2s + 5.84s", got)
	}
	// All later renewals time out: step down at exactly 7.84s.
	off := 4 * time.Second
	for off < 7840*ms {
		effs := s.tick(off)
		if hasEvent(effs, "stepped_down") {
			t.Fatalf("stepped down early at %v", off)
		}
		off = s.wake()
	}
	if off != 7840*ms {
		t.Fatalf("woken at %v, want 7.84s", off)
	}
	s.tick(7840*ms - 1)
	if !s.n.State().Coordinator {
		t.Fatal("stepped down 1ns early")
	}
	effs := s.tick(7840 * ms)
	if !hasEvent(effs, "stepped_down") || s.n.State().Coordinator {
		t.Fatalf("not stepped down at 7.84s: %s", describe(effs))
	}
}

func TestNodeRenewLostStepsDown(t *testing.T) {
	s := candidate(t)
	s.tick(2 * time.Second)
	id, _ := req[engine.OpRenewLease](s)
	effs := s.reply(2010*ms, id, nil, fmt.Errorf("x: %w", engine.ErrLeaseLost))
	if !hasEvent(effs, "stepped_down") || s.n.State().Coordinator {
		t.Fatalf("ErrLeaseLost did not step down: %s", describe(effs))
	}
	// Standby again: it polls within a retry period.
	if w := s.wake(); w < 2010*ms+800*ms || w > 2010*ms+1200*ms {
		t.Errorf("next poll at %v", w)
	}
}

// coordinatorState is a read reply: three live workers (a, b, me-less) and one task list.
func stateReply(off time.Duration, rev uint64, nodes []engine.NodeInfo, rows ...engine.Assignment) engine.StateReply {
	return engine.StateReply{Reply: store(off), Nodes: nodes, TaskLists: []engine.TaskList{{Domain: "d", Name: "orders", Partitions: 4}}, Revision: rev, Assignments: rows}
}

func alive(id string, inc uint64, age time.Duration) engine.NodeInfo {
	return engine.NodeInfo{ID: id, Incarnation: inc, Capacity: 1, Status: engine.NodeAlive, HeartbeatAge: age}
}

func TestNodeCoordinatorPlansAndApplies(t *testing.T) {
	s := candidate(t)
	readID, _ := req[engine.OpReadState](s)
	nodes := []engine.NodeInfo{alive("a", 1, time.Second), alive("b", 2, time.Second)}
	s.reply(60*ms, readID, stateReply(55*ms, 4, nodes,
		row(0, "", 0, 0, engine.Unassigned, 1), row(1, "", 0, 0, engine.Unassigned, 2),
		row(2, "", 0, 0, engine.Unassigned, 3), row(3, "", 0, 0, engine.Unassigned, 4)), nil)
	id, ap := req[engine.OpApply](s)
	b := ap.Batch
	if b.Fence != (engine.Fence{Key: "coordinator", Epoch: 4}) || len(b.Dead) != 0 || len(b.Changes) != 4 {
		t.Fatalf("batch %+v", b)
	}
	per := map[string]int{}
	for i, c := range b.Changes {
		if c.Kind != engine.ChangeAssign || c.Partition != part(i) || c.Revision != uint64(i+1) {
			t.Errorf("change %d: %+v", i, c)
		}
		if (c.Owner == "a" && c.Incarnation != 1) || (c.Owner == "b" && c.Incarnation != 2) {
			t.Errorf("change %d: owner incarnation %+v", i, c)
		}
		per[c.Owner]++
	}
	if per["a"] != 2 || per["b"] != 2 {
		t.Errorf("unbalanced: %v", per)
	}
	s.reply(900*ms, id, engine.ApplyReply{Reply: store(850 * ms), Revision: 8}, nil)
	if !hasEvent(s.effs, "applied") {
		t.Errorf("no applied event")
	}
	// Incremental read after a successful apply.
	readID, rs := req[engine.OpReadState](s)
	if rs.Since != 4 {
		t.Fatalf("read since %d, want 4 (incremental)", rs.Since)
	}
	var rows []engine.Assignment
	for i, c := range b.Changes {
		rows = append(rows, row(i, c.Owner, c.Incarnation, 1, engine.Assigned, uint64(5+i)))
	}
	s.reply(910*ms, readID, stateReply(905*ms, 8, nodes, rows...), nil)
	noReq[engine.OpApply](s)
	// Steady state: tick after tick, reads only, no writes.
	for off := 1900 * ms; off < 10*time.Second; off += time.Second {
		s.tick(off)
		for _, e := range s.effs {
			if r, ok := e.(engine.StoreRequest); ok {
				switch op := r.Op.(type) {
				case engine.OpReadState:
					if op.Since != 8 {
						t.Errorf("steady read since %d", op.Since)
					}
					s.reply(off+5*ms, r.ID, stateReply(off, 8, nodes), nil)
					noReq[engine.OpApply](s)
				case engine.OpRenewLease:
					s.reply(off+5*ms, r.ID, engine.LeaseReply{Reply: store(off), Lease: engine.Lease{Owner: meOwner, Epoch: 4, Status: engine.LeaseActive}}, nil)
				default:
					t.Errorf("steady state request %s", op.Name())
				}
			}
		}
	}
	// b stops heartbeating: declared dead and its rows go to a, in one batch.
	nodes = []engine.NodeInfo{alive("a", 1, time.Second), alive("b", 2, 5001*ms)}
	s.tick(10900 * ms)
	readID, _ = req[engine.OpReadState](s)
	s.reply(10910*ms, readID, stateReply(10005*ms, 8, nodes), nil)
	_, ap = req[engine.OpApply](s)
	if !slices.Equal(ap.Batch.Dead, []engine.DeadNode{{ID: "b", Incarnation: 2}}) || ap.Batch.DeadAfter != 5*time.Second {
		t.Errorf("dead %+v", ap.Batch.Dead)
	}
	for _, c := range ap.Batch.Changes {
		if c.Kind != engine.ChangeAssign || c.Owner != "a" {
			t.Errorf("change %+v, want assign to a", c)
		}
	}
	if per["b"] != len(ap.Batch.Changes) {
		t.Errorf("%d changes, want b's %d rows", len(ap.Batch.Changes), per["b"])
	}
}

func TestNodeApplyFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error // nil: time out
		stepDown bool
	}{
		{"conflict", fmt.Errorf("x: %w", engine.ErrConflict), false},
		{"unavailable", errUnavailable, false},
		{"timeout", nil, false},
		{"fenced", fmt.Errorf("x: %w", engine.ErrFenced), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := candidate(t)
			readID, _ := req[engine.OpReadState](s)
			nodes := []engine.NodeInfo{alive("a", 1, time.Second)}
			s.reply(60*ms, readID, stateReply(55*ms, 4, nodes, row(0, "", 0, 0, engine.Unassigned, 1)), nil)
			id, _ := req[engine.OpApply](s)
			var effs []engine.Effect
			if tc.err == nil {
				effs = s.tick(60*ms + 900*ms)
			} else {
				effs = s.reply(100*ms, id, nil, tc.err)
			}
			if !hasEvent(effs, "apply_failed") {
				t.Fatalf("no apply_failed: %s", describe(effs))
			}
			if got := !s.n.State().Coordinator; got != tc.stepDown {
				t.Fatalf("stepped down %v, want %v", got, tc.stepDown)
			}
			if tc.stepDown {
				return
			}
			// Never a blind repeat: the next tick re-reads everything.
			s.tick(1060 * ms)
			noReq[engine.OpApply](s)
			_, rs := req[engine.OpReadState](s)
			if rs.Since != 0 {
				t.Errorf("read since %d after a failed apply, want 0", rs.Since)
			}
		})
	}
}

func TestNodeRetryJitterDeterministic(t *testing.T) {
	polls := func(seed uint64) []time.Duration {
		s := newScript(t, engine.Config{NoWork: true}, seed)
		s.tick(0)
		var out []time.Duration
		for range 20 {
			id, _ := req[engine.OpAcquireLease](s)
			s.reply(s.now+10*ms, id, nil, engine.ErrUnavailable)
			w := s.wake()
			out = append(out, w-s.now)
			s.tick(w)
		}
		return out
	}
	a, b, c := polls(42), polls(42), polls(43)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different delays:\n%v\n%v", a, b)
	}
	if slices.Equal(a, c) {
		t.Errorf("different seeds, same delays: %v", a)
	}
	distinct := map[time.Duration]bool{}
	for _, d := range a {
		if d < 800*ms || d > 1200*ms {
			t.Errorf("delay %v outside RetryPeriod ± 20%%", d)
		}
		distinct[d] = true
	}
	if len(distinct) < 10 {
		t.Errorf("jitter barely varies: %v", a)
	}
}

// A standby polls just after the lease ends when the store says it ends before the
// next regular poll.
func TestNodePollsWhenLeaseEnds(t *testing.T) {
	s := newScript(t, engine.Config{NoWork: true}, 1)
	s.tick(0)
	id, _ := req[engine.OpAcquireLease](s)
	held := &engine.LeaseHeldError{Key: "coordinator", Holder: "x", Epoch: 1, Now: t0.Add(5 * ms), ExpiresAt: t0.Add(305 * ms)}
	s.reply(10*ms, id, nil, held)
	// 300ms left by store time, +1ms, + jitter below RetryJitter·RetryPeriod/4 (50ms).
	if w := s.wake(); w < 10*ms+301*ms || w >= 10*ms+351*ms {
		t.Errorf("next poll at %v, want in [311ms, 361ms) (store says 300ms left)", w)
	}
	if s.n.State().Coordinator {
		t.Error("coordinator without a grant")
	}
}

// A standby does not poll a lease that is held for long more often than every
// LeaseTTL/2: polling a held lease every RetryPeriod would cost every standby one
// statement per second for an answer the store already gave.
func TestNodePollsHeldLeaseRarely(t *testing.T) {
	s := newScript(t, engine.Config{NoWork: true}, 1)
	s.tick(0)
	for range 5 {
		id, _ := req[engine.OpAcquireLease](s)
		held := &engine.LeaseHeldError{Key: "coordinator", Holder: "x", Epoch: 1, Now: t0.Add(s.now), ExpiresAt: t0.Add(s.now + time.Hour)}
		s.reply(s.now+10*ms, id, nil, held)
		w := s.wake()
		if d := w - s.now; d < 3*time.Second || d > 3*time.Second+51*ms {
			t.Fatalf("held lease polled again after %v, want LeaseTTL/2 (3s) + jitter ≤ 50ms", d)
		}
		s.tick(w)
	}
}

func TestNodeDrain(t *testing.T) {
	s := registered(t)
	heartbeatWith(s, time.Second, 2, row(0, "me", 7, 3, engine.Assigned, 10))
	effs := s.at(1500*ms, engine.Drain{})
	id, up := req[engine.OpUpdateNode](s)
	if up.ID != "me" || up.Update.Draining == nil || !*up.Update.Draining {
		t.Fatalf("update %+v", up)
	}
	if !hasEvent(effs, "draining") || !s.n.State().Draining || s.n.State().Drained {
		t.Fatalf("state %+v", s.n.State())
	}
	s.reply(1510*ms, id, engine.Reply{Now: t0.Add(1505 * ms)}, nil)
	if s.n.State().Drained {
		t.Fatal("drained while owning p0")
	}
	heartbeatWith(s, 2*time.Second, 3, row(0, "me", 7, 3, engine.Releasing, 11))
	ackID, _ := req[engine.OpAckRelease](s)
	s.reply(2100*ms, ackID, engine.Reply{Now: t0.Add(2050 * ms)}, nil)
	if s.n.State().Drained {
		t.Fatal("drained before the store's list is empty")
	}
	effs = heartbeatWith(s, 3*time.Second, 4)
	if !hasEvent(effs, "drained") || !s.n.State().Drained {
		t.Fatalf("not drained: %s %+v", describe(effs), s.n.State())
	}
	// Undrain clears it.
	s.at(3500*ms, engine.Drain{Undrain: true})
	_, up = req[engine.OpUpdateNode](s)
	if *up.Update.Draining || s.n.State().Draining || s.n.State().Drained {
		t.Errorf("undrain: %+v %+v", up, s.n.State())
	}
}

func TestNodeShutdown(t *testing.T) {
	// A node with both roles: coordinator at epoch 1, registered with incarnation 3.
	s := newScript(t, engine.Config{}, 1)
	s.tick(0)
	regID, _ := req[engine.OpRegisterNode](s)
	acqID, _ := req[engine.OpAcquireLease](s)
	s.reply(10*ms, regID, engine.RegisterReply{Reply: store(5 * ms), Incarnation: 3}, nil)
	s.reply(10*ms, acqID, engine.LeaseReply{Reply: store(5 * ms), Lease: engine.Lease{Owner: meOwner, Epoch: 1, Status: engine.LeaseActive}}, nil)
	if !s.n.State().Coordinator {
		t.Fatal("not coordinator")
	}
	readID, _ := req[engine.OpReadState](s)
	s.reply(20*ms, readID, stateReply(15*ms, 1, []engine.NodeInfo{alive("me", 3, 0)}, row(0, "me", 3, 1, engine.Assigned, 1)), nil)
	heartbeatWith(s, 1010*ms, 2, row(0, "me", 3, 1, engine.Assigned, 1))
	if len(s.n.State().Owned) != 1 {
		t.Fatal("not running p0")
	}
	s.at(1100*ms, engine.Shutdown{})
	id, up := req[engine.OpUpdateNode](s)
	if !*up.Update.Draining {
		t.Fatal("shutdown does not drain")
	}
	s.reply(1110*ms, id, engine.Reply{Now: t0.Add(1105 * ms)}, nil)
	// No other worker: the drain cannot finish; after 2 × DeadAfter it stops anyway.
	// Keep its lease and liveness fresh meanwhile (it is still coordinating).
	for s.now < 11100*ms {
		off := s.wake()
		s.tick(off)
		for _, e := range s.effs {
			if r, ok := e.(engine.StoreRequest); ok {
				switch r.Op.(type) {
				case engine.OpHeartbeat:
					s.reply(off+5*ms, r.ID, engine.HeartbeatReply{Reply: store(off), AssignRevision: 2}, nil)
				case engine.OpRenewLease:
					s.reply(off+5*ms, r.ID, engine.LeaseReply{Reply: store(off), Lease: engine.Lease{Owner: meOwner, Epoch: 1, Status: engine.LeaseActive}}, nil)
				case engine.OpReadState:
					s.reply(off+5*ms, r.ID, stateReply(off, 1, []engine.NodeInfo{alive("me", 3, 0)}), nil)
				}
			}
		}
		if s.n.State().Stopped {
			t.Fatal("stopped without replies")
		}
		if len(stops(s.effs)) > 0 {
			break
		}
	}
	if s.now != 11100*ms {
		t.Fatalf("gave up at %v, want 1.1s + 2×DeadAfter", s.now)
	}
	if got := stops(s.effs); len(got) != 1 || got[0].Reason != engine.StopShutdown {
		t.Fatalf("stops %v", got)
	}
	if s.n.State().Coordinator {
		t.Fatal("still coordinator while releasing the lease")
	}
	relID, rel := req[engine.OpReleaseLease](s)
	depID, dep := req[engine.OpDeregisterNode](s)
	if rel.Epoch != 1 || dep.Incarnation != 3 {
		t.Errorf("release %+v deregister %+v", rel, dep)
	}
	noReq[engine.OpHeartbeat](s)
	effs := s.reply(11110*ms, relID, engine.LeaseReply{Reply: store(11105 * ms)}, nil)
	for _, e := range effs {
		if _, ok := e.(engine.Stopped); ok {
			t.Fatal("stopped before the deregistration was answered")
		}
	}
	// The deregistration is lost: the node gives up at its deadline and stops.
	effs = s.tick(11100*ms + 900*ms)
	if !slices.ContainsFunc(effs, func(e engine.Effect) bool { _, ok := e.(engine.Stopped); return ok }) {
		t.Fatalf("no Stopped: %s", describe(effs))
	}
	if !s.n.State().Stopped {
		t.Fatal("state not stopped")
	}
	if effs := s.n.Step(t0.Add(20*time.Second), engine.Tick{}); len(effs) != 0 {
		t.Errorf("effects after Stopped: %s", describe(effs))
	}
	_ = depID
}

func TestNodeConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg   engine.Config
		field string
	}{
		{engine.Config{}, "config.NodeID"},
		{engine.Config{NodeID: "x", LeaseTTL: 5 * time.Second, RenewInterval: 2 * time.Second}, "config.LeaseTTL"},
		{engine.Config{NodeID: "x", DeadAfter: 2 * time.Second}, "config.DeadAfter"},
		{engine.Config{NodeID: "x", RequestTimeout: 3 * time.Second}, "config.RequestTimeout"},
		{engine.Config{NodeID: "x", RetryJitter: 1}, "config.RetryJitter"},
		{engine.Config{NodeID: "x", SafetyMargin: 4 * time.Second}, "config.SafetyMargin"},
		{engine.Config{NodeID: "x", DeadAfter: 3 * time.Second, SafetyMargin: 1100 * time.Millisecond}, "config.SafetyMargin"},
		{engine.Config{NodeID: "x", Capacity: -1}, "node.capacity"},
		{engine.Config{NodeID: "x", NoWork: true, NoCandidate: true}, "config.NoWork"},
	} {
		_, err := engine.NewNode(tc.cfg, 1)
		var ve *engine.ValidationError
		if !errors.As(err, &ve) || ve.Field != tc.field || !errors.Is(err, engine.ErrInvalid) {
			t.Errorf("%+v: err %v, want a ValidationError on %s", tc.cfg, err, tc.field)
		}
	}
	if _, err := engine.NewNode(engine.Config{NodeID: "x"}, 1); err != nil {
		t.Errorf("defaults rejected: %v", err)
	}
}

// planOnce makes a fresh coordinator read the given state and returns the batch it
// applies (nil if none).
func planOnce(t *testing.T, nodes []engine.NodeInfo, lists []engine.TaskList, rows ...engine.Assignment) *engine.Batch {
	t.Helper()
	s := candidate(t)
	readID, _ := req[engine.OpReadState](s)
	s.reply(60*ms, readID, engine.StateReply{Reply: store(55 * ms), Nodes: nodes, TaskLists: lists, Revision: 100, Assignments: rows}, nil)
	for _, e := range s.effs {
		if r, ok := e.(engine.StoreRequest); ok {
			if ap, ok := r.Op.(engine.OpApply); ok {
				return &ap.Batch
			}
		}
	}
	return nil
}

func TestNodeCoordinatorChanges(t *testing.T) {
	four := []engine.TaskList{{Domain: "d", Name: "orders", Partitions: 4}}
	two := []engine.TaskList{{Domain: "d", Name: "orders", Partitions: 2}}
	ab := []engine.NodeInfo{alive("a", 1, time.Second), alive("b", 1, time.Second)}
	draining := alive("a", 1, time.Second)
	draining.Draining = true
	rel := func(i int, owner string, inc uint64, target string, rev uint64) engine.Assignment {
		r := row(i, owner, inc, 1, engine.Releasing, rev)
		r.Target = target
		return r
	}
	type ch struct {
		kind  engine.ChangeKind
		p     int
		owner string
	}
	for _, tc := range []struct {
		name  string
		nodes []engine.NodeInfo
		lists []engine.TaskList
		rows  []engine.Assignment
		dead  []engine.DeadNode
		want  []ch // nil: no Apply at all
	}{
		{
			name: "balanced: nothing to write", nodes: ab, lists: four,
			rows: []engine.Assignment{row(0, "a", 1, 1, engine.Assigned, 1), row(1, "a", 1, 1, engine.Assigned, 2), row(2, "b", 1, 1, engine.Assigned, 3), row(3, "b", 1, 1, engine.Assigned, 4)},
		},
		{
			name: "releasing with a live owner: wait for the ack", nodes: ab, lists: four,
			rows: []engine.Assignment{rel(0, "a", 1, "b", 1), row(1, "a", 1, 1, engine.Assigned, 2), row(2, "b", 1, 1, engine.Assigned, 3), row(3, "b", 1, 1, engine.Assigned, 4)},
		},
		{
			name: "releasing, owner's incarnation replaced: no ack awaited", nodes: []engine.NodeInfo{alive("a", 2, time.Second), alive("b", 1, time.Second)}, lists: four,
			rows: []engine.Assignment{rel(0, "a", 1, "b", 1), row(1, "a", 2, 1, engine.Assigned, 2), row(2, "b", 1, 1, engine.Assigned, 3), row(3, "b", 1, 1, engine.Assigned, 4)},
			want: []ch{{engine.ChangeAssign, 0, "a"}},
		},
		{
			name: "owner heartbeat too old: declared dead, rows moved in the same batch", lists: four,
			nodes: []engine.NodeInfo{alive("a", 1, 5*time.Second+ms), alive("b", 1, time.Second)},
			rows:  []engine.Assignment{row(0, "a", 1, 1, engine.Assigned, 1), row(1, "a", 1, 1, engine.Assigned, 2), row(2, "b", 1, 1, engine.Assigned, 3), row(3, "b", 1, 1, engine.Assigned, 4)},
			dead:  []engine.DeadNode{{ID: "a", Incarnation: 1}},
			want:  []ch{{engine.ChangeAssign, 0, "b"}, {engine.ChangeAssign, 1, "b"}},
		},
		{
			// A store may list nodes in any order (no ORDER BY): the batch's dead list,
			// and so the declared_dead events, must not follow it (issue 12).
			name: "nodes listed out of order: the dead list is sorted by id", lists: four,
			nodes: []engine.NodeInfo{alive("c", 1, 5*time.Second+ms), alive("b", 1, time.Second), alive("a", 2, 5*time.Second+ms)},
			rows:  []engine.Assignment{row(0, "a", 2, 1, engine.Assigned, 1), row(1, "c", 1, 1, engine.Assigned, 2), row(2, "b", 1, 1, engine.Assigned, 3), row(3, "b", 1, 1, engine.Assigned, 4)},
			dead:  []engine.DeadNode{{ID: "a", Incarnation: 2}, {ID: "c", Incarnation: 1}},
			want:  []ch{{engine.ChangeAssign, 0, "b"}, {engine.ChangeAssign, 1, "b"}},
		},
		{
			name: "dead owner and nobody eligible: unassign", lists: four,
			nodes: []engine.NodeInfo{{ID: "a", Incarnation: 1, Capacity: 1, Status: engine.NodeDead}, {ID: "c", Incarnation: 1, Capacity: 1, Draining: true}},
			rows:  []engine.Assignment{row(0, "x", 1, 1, engine.Assigned, 1), row(1, "a", 1, 1, engine.Assigned, 2), row(2, "", 0, 1, engine.Unassigned, 3), row(3, "", 0, 1, engine.Unassigned, 4)},
			want:  []ch{{engine.ChangeUnassign, 0, ""}, {engine.ChangeUnassign, 1, ""}},
		},
		{
			name: "a draining worker gets nothing new", lists: four,
			nodes: []engine.NodeInfo{draining, alive("b", 1, time.Second)},
			rows:  []engine.Assignment{row(0, "", 0, 1, engine.Unassigned, 1), row(1, "", 0, 1, engine.Unassigned, 2), row(2, "b", 1, 1, engine.Assigned, 3), row(3, "b", 1, 1, engine.Assigned, 4)},
			want:  []ch{{engine.ChangeAssign, 0, "b"}, {engine.ChangeAssign, 1, "b"}},
		},
		{
			name: "partitions no longer configured: release live owners, delete the rest", nodes: ab, lists: two,
			rows: []engine.Assignment{row(0, "a", 1, 1, engine.Assigned, 1), row(1, "b", 1, 1, engine.Assigned, 2), row(2, "b", 1, 1, engine.Assigned, 3), row(3, "", 0, 1, engine.Unassigned, 4), rel(4, "a", 1, "", 5), row(5, "", 0, 1, engine.Deleted, 6)},
			want: []ch{{engine.ChangeRelease, 2, ""}, {engine.ChangeDelete, 3, ""}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := planOnce(t, tc.nodes, tc.lists, tc.rows...)
			if tc.want == nil && tc.dead == nil {
				if b != nil {
					t.Fatalf("wrote %+v, want nothing", *b)
				}
				return
			}
			if b == nil {
				t.Fatal("no Apply")
			}
			if !slices.Equal(b.Dead, tc.dead) {
				t.Errorf("dead %v, want %v", b.Dead, tc.dead)
			}
			var got []ch
			revs := map[engine.PartitionID]uint64{}
			for _, r := range tc.rows {
				revs[r.Partition] = r.Revision
			}
			for _, c := range b.Changes {
				got = append(got, ch{c.Kind, c.Partition.Partition, c.Owner})
				if c.Revision != revs[c.Partition] {
					t.Errorf("%v carries revision %d, row has %d", c, c.Revision, revs[c.Partition])
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("changes %v, want %v", got, tc.want)
			}
		})
	}
}

// Replies to requests of an ended role are ignored: a renewal answered after the node
// stepped down does not make it coordinator again; a heartbeat answered after the
// incarnation was declared dead does not start anything.
func TestNodeStaleRepliesIgnored(t *testing.T) {
	s := candidate(t)
	readID, _ := req[engine.OpReadState](s)
	s.reply(60*ms, readID, stateReply(55*ms, 4, []engine.NodeInfo{alive("a", 1, time.Second)}, row(0, "", 0, 0, engine.Unassigned, 1)), nil)
	applyID, _ := req[engine.OpApply](s)
	s.tick(2 * time.Second)
	// The apply timed out at 960ms; a read followed at 1.05s... and the renewal now.
	renewID, _ := req[engine.OpRenewLease](s)
	s.reply(2010*ms, renewID, nil, fmt.Errorf("x: %w", engine.ErrLeaseLost))
	if s.n.State().Coordinator {
		t.Fatal("still coordinator")
	}
	s.reply(2020*ms, applyID, engine.ApplyReply{Reply: store(2015 * ms)}, nil)
	s.reply(2030*ms, renewID, engine.LeaseReply{Reply: store(2025 * ms), Lease: engine.Lease{Owner: meOwner, Epoch: 4, Status: engine.LeaseActive}}, nil)
	if s.n.State().Coordinator || hasEvent(s.effs, "applied") {
		t.Fatal("a stale reply revived the coordinator role")
	}

	w := registered(t)
	heartbeatWith(w, time.Second, 2, row(0, "me", 7, 3, engine.Releasing, 20))
	w.tick(2 * time.Second) // the first ack timed out at 1.91s: resent with the heartbeat
	hbID, _ := req[engine.OpHeartbeat](w)
	ackID, _ := req[engine.OpAckRelease](w)
	w.reply(2010*ms, ackID, nil, errNodeDead)
	req[engine.OpRegisterNode](w)
	effs := w.reply(2020*ms, hbID, engine.HeartbeatReply{Reply: store(2015 * ms), AssignRevision: 9, Changed: true,
		Assignments: []engine.Assignment{row(1, "me", 7, 1, engine.Assigned, 30)}}, nil)
	if len(starts(effs)) != 0 || w.n.State().Registered {
		t.Fatalf("a heartbeat of the dead incarnation was used: %s", describe(effs))
	}
}

// TestNodeHeartbeatsFastWhileIncoming: while the last list says partitions are on their
// way to the node (HeartbeatReply.Incoming), it heartbeats every Heartbeat/5, counted
// from each heartbeat's send; once nothing is incoming it goes back to every Heartbeat.
// Liveness keeps counting from each successful heartbeat's send.
func TestNodeHeartbeatsFastWhileIncoming(t *testing.T) {
	s := registered(t)
	hb := func(off, replyAt time.Duration, r engine.HeartbeatReply) []engine.Effect {
		t.Helper()
		s.tick(off)
		id, _ := req[engine.OpHeartbeat](s)
		r.Reply = store(off + 5*ms)
		return s.reply(replyAt, id, r, nil)
	}
	// 1s: p3 is being released towards this node.
	effs := hb(time.Second, 1010*ms, engine.HeartbeatReply{AssignRevision: 2, Changed: true, Incoming: []engine.PartitionID{part(3)}})
	if !hasEvent(effs, "incoming") {
		t.Errorf("no incoming event: %s", describe(effs))
	}
	if w := s.wake(); w != 1200*ms {
		t.Fatalf("next wake %v, want 1.2s (1s + Heartbeat/5)", w)
	}
	s.tick(1199 * ms)
	noReq[engine.OpHeartbeat](s)
	// 1.2s: unchanged (nothing is said about Incoming: the last list still holds).
	hb(1200*ms, 1210*ms, engine.HeartbeatReply{AssignRevision: 2})
	if w := s.wake(); w != 1400*ms {
		t.Fatalf("after an unchanged reply: next wake %v, want 1.4s", w)
	}
	if got := s.n.State().LivenessUntil.Sub(t0); got != 1200*ms+4850*ms {
		t.Errorf("LivenessUntil %v, want the fast heartbeat's send + 4.85s", got)
	}
	// 1.4s: the old owner acknowledged; p3 is still on its way (not yet assigned). The
	// reply comes late, after the next fast heartbeat was due: it goes out at once.
	effs = hb(1400*ms, 1650*ms, engine.HeartbeatReply{AssignRevision: 3, Changed: true, Incoming: []engine.PartitionID{part(3)}})
	if hasEvent(effs, "incoming") {
		t.Errorf("incoming event although the list did not change: %s", describe(effs))
	}
	id, op := req[engine.OpHeartbeat](s)
	if op.Known != 3 {
		t.Errorf("heartbeat sent at once with Known %d, want 3", op.Known)
	}
	// 1.65s: p3 arrives; nothing else is coming: back to the normal rhythm.
	effs = s.reply(1660*ms, id, engine.HeartbeatReply{Reply: store(1655 * ms), AssignRevision: 4, Changed: true,
		Assignments: []engine.Assignment{row(3, "me", 7, 2, engine.Assigned, 30)}}, nil)
	if got := starts(effs); !slices.Equal(got, []engine.StartPartition{{Partition: part(3), Generation: 2}}) {
		t.Errorf("starts %v, want p3 at generation 2", got)
	}
	if !hasEvent(effs, "incoming") {
		t.Errorf("no incoming event when the list emptied: %s", describe(effs))
	}
	if w := s.wake(); w != 2650*ms {
		t.Fatalf("nothing incoming: next wake %v, want 2.65s (1.65s + Heartbeat)", w)
	}
	if got := s.n.State().LivenessUntil.Sub(t0); got != 1650*ms+4850*ms {
		t.Errorf("LivenessUntil %v, want 1.65s + 4.85s", got)
	}
	// 2.65s: two partitions coming; one goes elsewhere (it leaves Incoming without
	// arriving): still fast for the other; when that one leaves too, normal again.
	hb(2650*ms, 2660*ms, engine.HeartbeatReply{AssignRevision: 5, Changed: true,
		Assignments: []engine.Assignment{row(3, "me", 7, 2, engine.Assigned, 30)}, Incoming: []engine.PartitionID{part(5), part(4)}})
	if w := s.wake(); w != 2850*ms {
		t.Fatalf("two incoming: next wake %v, want 2.85s", w)
	}
	hb(2850*ms, 2860*ms, engine.HeartbeatReply{AssignRevision: 6, Changed: true,
		Assignments: []engine.Assignment{row(3, "me", 7, 2, engine.Assigned, 30)}, Incoming: []engine.PartitionID{part(5)}})
	if w := s.wake(); w != 3050*ms {
		t.Fatalf("one still incoming: next wake %v, want 3.05s", w)
	}
	effs = hb(3050*ms, 3060*ms, engine.HeartbeatReply{AssignRevision: 7, Changed: true,
		Assignments: []engine.Assignment{row(3, "me", 7, 2, engine.Assigned, 30)}})
	if len(starts(effs))+len(stops(effs)) != 0 {
		t.Errorf("partitions that went elsewhere changed what runs here: %s", describe(effs))
	}
	if w := s.wake(); w != 4050*ms {
		t.Fatalf("nothing incoming: next wake %v, want 4.05s", w)
	}
	// A failed heartbeat keeps the rhythm it was sent with; the node re-registers after
	// ErrNodeDead and its new incarnation starts at the normal rhythm.
	hb(4050*ms, 4060*ms, engine.HeartbeatReply{AssignRevision: 8, Changed: true,
		Assignments: []engine.Assignment{row(3, "me", 7, 2, engine.Assigned, 30)}, Incoming: []engine.PartitionID{part(6)}})
	s.tick(4250 * ms)
	id, _ = req[engine.OpHeartbeat](s)
	s.reply(4260*ms, id, nil, errUnavailable)
	if w := s.wake(); w != 4450*ms {
		t.Fatalf("after a failed fast heartbeat: next wake %v, want 4.45s", w)
	}
	s.tick(4450 * ms)
	id, _ = req[engine.OpHeartbeat](s)
	s.reply(4460*ms, id, nil, errNodeDead)
	rid, _ := req[engine.OpRegisterNode](s)
	s.reply(4470*ms, rid, engine.RegisterReply{Reply: store(4465 * ms), Incarnation: 8}, nil)
	if w := s.wake(); w != 5460*ms {
		t.Fatalf("new incarnation: next wake %v, want 5.46s (registration send at 4.46s + Heartbeat)", w)
	}
}

// TestNodeFastHeartbeatFloor: the fast rhythm is Heartbeat/5 but never under 20ms.
func TestNodeFastHeartbeatFloor(t *testing.T) {
	for _, tc := range []struct{ heartbeat, fast time.Duration }{
		{time.Second, 200 * ms}, {500 * ms, 100 * ms}, {60 * ms, 20 * ms},
	} {
		cfg := engine.Config{NodeID: "me", NoCandidate: true, Heartbeat: tc.heartbeat, DeadAfter: 5 * tc.heartbeat, RequestTimeout: tc.heartbeat / 2}
		n, err := engine.NewNode(cfg, 1)
		if err != nil {
			t.Fatal(err)
		}
		only := func(effs []engine.Effect) (engine.StoreRequest, time.Time) {
			t.Helper()
			var r []engine.StoreRequest
			var wake time.Time
			for _, e := range effs {
				switch e := e.(type) {
				case engine.StoreRequest:
					r = append(r, e)
				case engine.WakeAt:
					wake = e.At
				}
			}
			if len(r) != 1 {
				t.Fatalf("Heartbeat %v: %d requests, want 1: %s", tc.heartbeat, len(r), describe(effs))
			}
			return r[0], wake
		}
		reg, _ := only(n.Step(t0, engine.Tick{}))
		n.Step(t0.Add(ms), engine.StoreReply{ID: reg.ID, Value: engine.RegisterReply{Reply: store(ms), Incarnation: 1}})
		at := t0.Add(tc.heartbeat)
		hb, _ := only(n.Step(at, engine.Tick{}))
		var wake time.Time
		for _, e := range n.Step(at.Add(ms), engine.StoreReply{ID: hb.ID, Value: engine.HeartbeatReply{Reply: engine.Reply{Now: at}, AssignRevision: 2, Changed: true,
			Incoming: []engine.PartitionID{part(0)}}}) {
			if w, ok := e.(engine.WakeAt); ok {
				wake = w.At
			}
		}
		if got := wake.Sub(at); got != tc.fast {
			t.Errorf("Heartbeat %v: fast heartbeat after %v, want %v", tc.heartbeat, got, tc.fast)
		}
	}
}

// A read answered after the coordinator's own lease window (its renewals unanswered),
// though before the read's deadline, must not lead to a plan or a write: past that
// instant another node may lead. (The node's wake-up at the window's end normally steps
// it down first; a driver that was behind, or a paused process, delivers the reply
// first.)
func TestNodeNoWriteAfterLeaseWindow(t *testing.T) {
	s := candidate(t) // lease counted from 0: the window ends at 5.84s
	nodes := []engine.NodeInfo{alive("a", 1, time.Second)}
	var readID uint64
	var readSent time.Duration
	for off := 100 * ms; off < 5500*ms; off = s.wake() {
		s.tick(off)
		for _, e := range s.effs {
			if r, ok := e.(engine.StoreRequest); ok {
				if _, isRead := r.Op.(engine.OpReadState); isRead {
					readID, readSent = r.ID, off
				}
			}
		}
	}
	if readSent < 4*time.Second || readSent+900*ms <= 5840*ms {
		t.Fatalf("no read in flight across the window's end (last read sent at %v)", readSent)
	}
	// Answered at 5.85s, after the window, before the read's deadline; an unassigned
	// row and a live worker would make a coordinator write.
	effs := s.reply(5850*ms, readID, stateReply(5845*ms, 4, nodes, row(0, "", 0, 0, engine.Unassigned, 1)), nil)
	for _, e := range effs {
		if r, ok := e.(engine.StoreRequest); ok {
			if _, isApply := r.Op.(engine.OpApply); isApply {
				t.Fatalf("wrote after its lease window: %s", describe(effs))
			}
		}
	}
	if s.n.State().Coordinator {
		t.Fatal("still coordinator after its lease window")
	}
}
