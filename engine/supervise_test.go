package engine_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
)

// supervisedNode is a worker-only node with a long DeadAfter (so the script need not
// answer heartbeats to stay alive), registered at 0 with incarnation 7, owning part(0)
// at generation 3 from a heartbeat at 1s.
func supervisedNode(t *testing.T, cfg engine.Config) *script {
	t.Helper()
	cfg.NoCandidate = true
	cfg.DeadAfter = time.Minute
	s := newScript(t, cfg, 1)
	s.tick(0)
	id, _ := req[engine.OpRegisterNode](s)
	s.reply(10*ms, id, engine.RegisterReply{Reply: store(5 * ms), Incarnation: 7}, nil)
	effs := heartbeatWith(s, time.Second, 2, row(0, "me", 7, 3, engine.Assigned, 10))
	if got := starts(effs); !slices.Equal(got, []engine.StartPartition{{Partition: part(0), Generation: 3}}) {
		t.Fatalf("starts %v", got)
	}
	return s
}

func fail(s *script, off time.Duration, gen uint64) []engine.Effect {
	return s.at(off, engine.PartitionFailed{Partition: part(0), Generation: gen, Reason: "returned: boom"})
}

func supOf(t *testing.T, s *script) engine.SupervisedPartition {
	t.Helper()
	st := s.n.State()
	if len(st.Supervised) != 1 || st.Supervised[0].Partition != part(0) {
		t.Fatalf("supervised %+v, want part 0 only", st.Supervised)
	}
	return st.Supervised[0]
}

func TestRestartDelay(t *testing.T) {
	c := engine.Config{RestartBase: 100 * ms, RestartMax: time.Second}
	var got []time.Duration
	for k := 1; k <= 6; k++ {
		got = append(got, c.RestartDelay(k))
	}
	if want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second}; !slices.Equal(got, want) {
		t.Errorf("exponential delays %v, want %v", got, want)
	}
	c.RestartLinear = true
	got = got[:0]
	for k := 1; k <= 12; k += 3 {
		got = append(got, c.RestartDelay(k))
	}
	if want := []time.Duration{100 * ms, 400 * ms, 700 * ms, time.Second}; !slices.Equal(got, want) {
		t.Errorf("linear delays %v, want %v", got, want)
	}
	if d := c.RestartDelay(1 << 40); d != time.Second {
		t.Errorf("huge k: %v, want the cap", d)
	}
}

// A failed handler is restarted with the same generation, after a jittered exponential
// backoff, and not before; the heartbeat's list does not start it early.
func TestSupervisionRestartsWithBackoff(t *testing.T) {
	s := supervisedNode(t, engine.Config{RestartBase: time.Second, RestartMax: 10 * time.Second, RestartJitter: 0.1, GiveBackAfter: engine.NeverGiveBack})
	at := 1100 * ms
	for k, base := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second} {
		effs := fail(s, at, 3)
		if got := stops(effs); !slices.Equal(got, []engine.StopPartition{{Partition: part(0), Generation: 3, Reason: engine.StopFailed}}) {
			t.Fatalf("failure %d: stops %v", k+1, got)
		}
		if !hasEvent(effs, "partition_failed") || len(starts(effs)) != 0 {
			t.Fatalf("failure %d: %s", k+1, describe(effs))
		}
		sp := supOf(t, s)
		wait := sp.NextAttempt.Sub(t0.Add(at))
		lo, hi := time.Duration(float64(base)*0.9), min(time.Duration(float64(base)*1.1), 10*time.Second)
		if sp.State != engine.SupRestarting || sp.Failures != k+1 || wait < lo || wait > hi || sp.LastError != "returned: boom" {
			t.Fatalf("failure %d: %+v, wait %v, want restarting in [%v, %v]", k+1, sp, wait, lo, hi)
		}
		if len(s.n.State().Owned) != 0 {
			t.Fatalf("failure %d: still owned while restarting", k+1)
		}
		if w := s.wake(); w > at+wait {
			t.Fatalf("failure %d: next wake %v after the restart at %v", k+1, w, at+wait)
		}
		if effs := s.tick(at + wait - 1); len(starts(effs)) != 0 {
			t.Fatalf("failure %d: restarted 1ns early", k+1)
		}
		at += wait
		effs = s.tick(at)
		if got := starts(effs); !slices.Equal(got, []engine.StartPartition{{Partition: part(0), Generation: 3}}) {
			t.Fatalf("failure %d: restart %v, want generation 3 again", k+1, got)
		}
		if sp := supOf(t, s); sp.State != engine.SupRunning {
			t.Fatalf("after restart: %+v", sp)
		}
		at += 10 * ms
	}
	// A report for another generation is stale: ignored.
	if effs := fail(s, at, 2); len(stops(effs)) != 0 {
		t.Fatalf("stale failure stopped the partition: %s", describe(effs))
	}
}

// GiveBackAfter failures within the window give the partition back; the store's reply
// ends the supervision, and the list without the row changes nothing.
func TestSupervisionGivesBack(t *testing.T) {
	s := supervisedNode(t, engine.Config{RestartBase: 100 * ms, RestartMax: time.Second, GiveBackAfter: 3, GiveBackWindow: time.Minute})
	at := 1100 * ms
	for k := 1; k <= 2; k++ {
		fail(s, at, 3)
		noReq[engine.OpGiveBack](s)
		at = supOf(t, s).NextAttempt.Sub(t0)
		s.tick(at)
		at += 10 * ms
	}
	fail(s, at, 3)
	id, op := req[engine.OpGiveBack](s)
	if op.GiveBack != (engine.Ack{Partition: part(0), Node: "me", Incarnation: 7, Generation: 3}) {
		t.Fatalf("give back %+v", op.GiveBack)
	}
	if sp := supOf(t, s); sp.State != engine.SupGivingBack || sp.Failures != 3 {
		t.Fatalf("supervised %+v", sp)
	}
	// Nothing restarts it while the give-back is in flight.
	if effs := s.tick(at + 500*ms); len(starts(effs)) != 0 {
		t.Fatalf("restarted while giving back")
	}
	at += 600 * ms
	effs := s.reply(at, id, store(at-5*ms), nil)
	if !hasEvent(effs, "given_back") {
		t.Fatalf("no given_back event: %s", describe(effs))
	}
	st := s.n.State()
	if len(st.Supervised) != 0 || len(st.GivenBack) != 1 || st.GivenBack[0].Partition != part(0) || st.GivenBack[0].Generation != 3 {
		t.Fatalf("state after give-back: supervised %+v, given back %+v", st.Supervised, st.GivenBack)
	}
	// It asks for the new list as soon as no heartbeat is in flight.
	for i := 0; i < 3 && !hasHeartbeat(s.effs); i++ {
		at = s.wake()
		s.tick(at)
	}
	hid, _ := req[engine.OpHeartbeat](s)
	effs = s.reply(at+10*ms, hid, engine.HeartbeatReply{Reply: store(at), AssignRevision: 40, Changed: true}, nil)
	if len(starts(effs))+len(stops(effs)) != 0 {
		t.Fatalf("list without the row: %s", describe(effs))
	}
}

// Failures that leave the window are forgotten: they never add up to a give-back.
func TestSupervisionWindow(t *testing.T) {
	s := supervisedNode(t, engine.Config{RestartBase: 100 * ms, RestartMax: 200 * ms, GiveBackAfter: 2, GiveBackWindow: 10 * time.Second})
	at := 1100 * ms
	for k := 0; k < 4; k++ {
		fail(s, at, 3)
		noReq[engine.OpGiveBack](s)
		at = supOf(t, s).NextAttempt.Sub(t0)
		s.tick(at)
		at += 11 * time.Second
	}
	fail(s, at, 3)
	if sp := supOf(t, s); sp.Failures != 1 {
		t.Fatalf("failures %d, want only the one inside the window", sp.Failures)
	}
	fail(s, at, 3) // stale (already stopped): ignored
	noReq[engine.OpGiveBack](s)
	at = supOf(t, s).NextAttempt.Sub(t0)
	s.tick(at)
	fail(s, at+time.Second, 3)
	req[engine.OpGiveBack](s)
}

// A give-back that conflicts (the row moved meanwhile) ends the supervision.
func TestSupervisionGiveBackConflict(t *testing.T) {
	s := supervisedNode(t, engine.Config{GiveBackAfter: 1})
	fail(s, 1100*ms, 3)
	id, _ := req[engine.OpGiveBack](s)
	s.reply(1200*ms, id, nil, errConflict)
	if st := s.n.State(); len(st.Supervised) != 0 || len(st.GivenBack) != 0 {
		t.Fatalf("after a conflicting give-back: %+v / %+v", st.Supervised, st.GivenBack)
	}
}

// A row that is released or re-generated while its handler waits for a restart ends the
// supervision: the release is acknowledged at once and nothing restarts.
func TestSupervisionRowMoves(t *testing.T) {
	s := supervisedNode(t, engine.Config{RestartBase: 5 * time.Second, RestartMax: 5 * time.Second})
	fail(s, 1100*ms, 3)
	// A changed list during the backoff does not start it early.
	if effs := heartbeatWith(s, 2*time.Second, 3, row(0, "me", 7, 3, engine.Assigned, 10)); len(starts(effs)) != 0 {
		t.Fatalf("started by a heartbeat during the backoff")
	}
	r := row(0, "me", 7, 3, engine.Releasing, 11)
	r.Target = "other"
	effs := heartbeatWith(s, 3*time.Second, 4, r)
	if _, ack := req[engine.OpAckRelease](s); ack.Ack.Partition != part(0) || ack.Ack.Generation != 3 {
		t.Fatalf("ack %+v", ack)
	}
	if len(stops(effs)) != 0 || len(s.n.State().Supervised) != 0 {
		t.Fatalf("effects %s, supervised %+v", describe(effs), s.n.State().Supervised)
	}
	if effs := s.tick(8 * time.Second); len(starts(effs)) != 0 {
		t.Fatalf("restarted a released partition")
	}
}

// No restart while the node cannot prove it is alive.
func TestSupervisionWaitsForLiveness(t *testing.T) {
	s := newScript(t, engine.Config{NoCandidate: true, RestartBase: 100 * ms, RestartMax: 100 * ms}, 1)
	s.tick(0)
	id, _ := req[engine.OpRegisterNode](s)
	s.reply(10*ms, id, engine.RegisterReply{Reply: store(5 * ms), Incarnation: 7}, nil)
	heartbeatWith(s, time.Second, 2, row(0, "me", 7, 3, engine.Assigned, 10))
	fail(s, 5800*ms, 3) // liveness runs out at 1s + 4.85s; the restart is due at 5.88–5.92s
	for off := 5810 * ms; off < 6500*ms; off += 10 * ms {
		if effs := s.tick(off); len(starts(effs)) != 0 {
			t.Fatalf("restarted at %v, past the liveness deadline", off)
		}
	}
}

var errConflict = engine.ErrConflict

// The coordinator keeps a given-back partition off the node that gave it back, holds it
// when every eligible worker gave it back (reported failing), and assigns it again once a
// cool-down ends.
func TestCoordinatorCoolDown(t *testing.T) {
	s := candidate(t)
	readID, _ := req[engine.OpReadState](s)
	nodes := []engine.NodeInfo{alive("a", 1, time.Second), alive("b", 1, time.Second)}
	p0 := row(0, "", 0, 3, engine.Unassigned, 4)
	p0.GivenBackBy, p0.GivenBackAt = "a", t0.Add(50*ms)
	s.reply(60*ms, readID, stateReply(55*ms, 4, nodes, p0,
		row(1, "a", 1, 1, engine.Assigned, 1), row(2, "b", 1, 1, engine.Assigned, 2), row(3, "b", 1, 1, engine.Assigned, 3)), nil)
	id, ap := req[engine.OpApply](s)
	if len(ap.Batch.Changes) != 1 || ap.Batch.Changes[0].Partition != part(0) || ap.Batch.Changes[0].Owner != "b" {
		t.Fatalf("batch %+v, want p0 assigned to b (a gave it back)", ap.Batch.Changes)
	}
	s.reply(100*ms, id, engine.ApplyReply{Reply: store(95 * ms), Revision: 5}, nil)
	// b gives it back too: both cool down, so it is held and reported.
	readID, _ = req[engine.OpReadState](s)
	p0 = row(0, "", 0, 4, engine.Unassigned, 6)
	p0.GivenBackBy, p0.GivenBackAt = "b", t0.Add(105*ms)
	s.reply(110*ms, readID, stateReply(108*ms, 6, nodes, p0), nil)
	noReq[engine.OpApply](s)
	if !hasEvent(s.effs, "partition_failing") {
		t.Fatalf("no partition_failing event: %s", describe(s.effs))
	}
	if f := s.n.State().Failing; !slices.Equal(f, []engine.PartitionID{part(0)}) {
		t.Fatalf("failing %v", f)
	}
	// At the next tick (store time still within the cool-down): still held.
	s.tick(1200 * ms)
	for _, e := range s.effs {
		if r, ok := e.(engine.StoreRequest); ok {
			if _, ok := r.Op.(engine.OpReadState); ok {
				s.reply(1210*ms, r.ID, stateReply(1205*ms, 6, nodes), nil)
			}
		}
	}
	noReq[engine.OpApply](s)
	// Once a's cool-down has ended (store time), it goes back to a.
	cd := engine.DefaultConfig().GiveBackCoolDown
	s.tick(2400 * ms)
	for _, e := range s.effs {
		if r, ok := e.(engine.StoreRequest); ok {
			switch r.Op.(type) {
			case engine.OpReadState:
				s.reply(2410*ms, r.ID, stateReply(cd+60*ms, 6, nodes), nil)
			case engine.OpRenewLease:
			}
		}
	}
	_, ap = req[engine.OpApply](s)
	if len(ap.Batch.Changes) != 1 || ap.Batch.Changes[0].Owner != "a" {
		t.Fatalf("after a's cool-down: %+v, want p0 to a", ap.Batch.Changes)
	}
	if f := s.n.State().Failing; len(f) != 0 {
		t.Fatalf("still failing: %v", f)
	}
}

// A release towards a node that gave the partition back moves another partition of
// the same task list from the same owner instead.
func TestCoordinatorSteersReleases(t *testing.T) {
	nodes := []engine.NodeInfo{alive("a", 1, time.Second), alive("b", 1, time.Second)}
	lists := []engine.TaskList{{Domain: "d", Name: "orders", Partitions: 4}}
	for given := 0; given < 4; given++ {
		var rows []engine.Assignment
		for i := 0; i < 4; i++ {
			r := row(i, "a", 1, 1, engine.Assigned, uint64(i+1))
			if i == given {
				r.GivenBackBy, r.GivenBackAt = "b", t0
			}
			rows = append(rows, r)
		}
		b := planOnce(t, nodes, lists, rows...)
		if b == nil || len(b.Changes) != 2 {
			t.Fatalf("p%d given back by b: batch %+v, want two releases", given, b)
		}
		for _, c := range b.Changes {
			if c.Kind != engine.ChangeRelease || c.Target != "b" || c.Partition == part(given) {
				t.Errorf("p%d given back by b: change %+v", given, c)
			}
		}
	}
}

func hasHeartbeat(effs []engine.Effect) bool {
	for _, e := range effs {
		if r, ok := e.(engine.StoreRequest); ok {
			if _, ok := r.Op.(engine.OpHeartbeat); ok {
				return true
			}
		}
	}
	return false
}

func TestSupervisionConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg   engine.Config
		field string
	}{
		{engine.Config{RestartBase: time.Second, RestartMax: 500 * ms}, "config.RestartMax"},
		{engine.Config{RestartJitter: 1}, "config.RestartJitter"},
		{engine.Config{RestartBase: -time.Second}, "config.RestartBase"},
		{engine.Config{GiveBackAfter: -2}, "config.GiveBackAfter"},
		{engine.Config{GiveBackWindow: -time.Second}, "config.GiveBackWindow"},
		{engine.Config{GiveBackCoolDown: -time.Second}, "config.GiveBackCoolDown"},
	} {
		tc.cfg.NodeID = "x"
		err := tc.cfg.WithDefaults().Validate()
		var ve *engine.ValidationError
		if !errors.As(err, &ve) || ve.Field != tc.field {
			t.Errorf("%+v: %v, want a validation error of %s", tc.cfg, err, tc.field)
		}
	}
	if err := (engine.Config{NodeID: "x", GiveBackAfter: engine.NeverGiveBack}).WithDefaults().Validate(); err != nil {
		t.Errorf("NeverGiveBack: %v", err)
	}
}

// A release towards a node cooling down for every partition the owner could give it is
// not made: nothing bounces back to where it failed.
func TestCoordinatorDropsHopelessRelease(t *testing.T) {
	nodes := []engine.NodeInfo{alive("a", 1, time.Second), alive("b", 1, time.Second)}
	lists := []engine.TaskList{{Domain: "d", Name: "orders", Partitions: 2}}
	var rows []engine.Assignment
	for i := 0; i < 2; i++ {
		r := row(i, "a", 1, 1, engine.Assigned, uint64(i+1))
		r.GivenBackBy, r.GivenBackAt = "b", t0
		rows = append(rows, r)
	}
	if b := planOnce(t, nodes, lists, rows...); b != nil {
		t.Fatalf("batch %+v, want none: b gave both back", b.Changes)
	}
	rows[1].GivenBackBy = ""
	if b := planOnce(t, nodes, lists, rows...); b == nil || len(b.Changes) != 1 || b.Changes[0].Partition != part(1) || b.Changes[0].Target != "b" {
		t.Fatalf("batch %+v, want p1 released to b", b)
	}
}

// When the owner the allocator moves from has nothing the target may take, another
// owner's partition of the same task list goes instead.
func TestCoordinatorSteersReleaseToAnotherOwner(t *testing.T) {
	nodes := []engine.NodeInfo{alive("a", 1, time.Second), alive("b", 1, time.Second), alive("c", 1, time.Second)}
	lists := []engine.TaskList{{Domain: "d", Name: "orders", Partitions: 6}}
	var rows []engine.Assignment
	for i := 0; i < 6; i++ {
		owner := "a"
		if i >= 3 {
			owner = "b"
		}
		r := row(i, owner, 1, 1, engine.Assigned, uint64(i+1))
		if owner == "a" {
			r.GivenBackBy, r.GivenBackAt = "c", t0
		}
		rows = append(rows, r)
	}
	b := planOnce(t, nodes, lists, rows...)
	if b == nil || len(b.Changes) != 2 {
		t.Fatalf("batch %+v, want two releases to c", b)
	}
	for _, ch := range b.Changes {
		if ch.Kind != engine.ChangeRelease || ch.Target != "c" || ch.Partition.Partition < 3 {
			t.Errorf("change %+v: want a release of one of b's partitions to c", ch)
		}
	}
}
