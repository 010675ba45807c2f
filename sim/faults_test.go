package sim

import (
	"strings"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
)

// Regression tests for the simulator's own faults (issue 12 §2).

// selfFenceResume: a worker crash makes the coordinator write; its Apply is held by a
// 4.9s pause that starts at that write (later than the action's nominal time). The
// paused coordinator's own liveness (4.85s) runs out but nobody declares it dead (its
// lease outlives the pause), so at the resume it self-fences, its heartbeat then tells
// it that it still owns its partitions, and it carries on with them at the same
// generation.
func selfFenceResume() *Scenario {
	sc := base("self-fence-resume", 60)
	sc.TaskLists = []TaskListDef{{Domain: "orders", Name: "billing", Partitions: 64}}
	sc.Timeline = []Action{
		{At: sec(10), Do: DoCrash, Target: "worker", For: sec(3)},
		{At: sec(11), Do: DoPause, Target: "coordinator", Hold: "apply", For: sec(4.9)},
	}
	sc.Expect = Expect{ConvergeWithin: sec(25), CoordinatorWithin: sec(8), WorkerWithin: sec(12)}
	return sc
}

// TestWorkerBoundCountsSameGenerationResume: a node that self-fenced and resumed its own
// partitions at the same generation has processed them again (the B2 clock stops), and
// the default heal waits for the held pause's real end. Before the fix every seed of
// this scenario raised a false B2.
func TestWorkerBoundCountsSameGenerationResume(t *testing.T) {
	sc := selfFenceResume()
	resumedSame := 0
	for seed := uint64(1); seed <= 20; seed++ {
		s, err := New(sc, Options{Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		r := s.Run()
		if r.Violation != nil {
			t.Fatalf("seed %d:\n%s", seed, r.Violation)
		}
		if r.Coverage["pause_between_decision_and_write"] == 0 {
			t.Fatalf("seed %d: the held pause never started", seed)
		}
		if r.Coverage["stop_self_fenced"] > 0 {
			resumedSame++
		}
		// The held pause started after its nominal time (11s + 4.9s was the old heal
		// time): the heal moved to its real end.
		if r.Coverage["heal_moved_by_late_fault"] == 0 || s.metrics.healAt <= int64(15900*time.Millisecond) {
			t.Fatalf("seed %d: heal at %s, want after the held pause's real end (coverage %v)", seed, fmtV(s.metrics.healAt), r.Coverage)
		}
		if len(r.WorkerFailovers) == 0 {
			t.Fatalf("seed %d: no worker failover measured", seed)
		}
	}
	if resumedSame == 0 {
		t.Fatal("no seed self-fenced: the scenario does not reach the case it is for")
	}
}

// TestHeldPauseNotBegunByHealIsDropped: a pause armed with hold that has not begun by the
// heal never begins (faults stop at the heal).
func TestHeldPauseNotBegunByHealIsDropped(t *testing.T) {
	sc := base("late-hold", 60)
	heal := sec(5)
	// Nothing changes after the cold start, so the coordinator's next Apply comes only
	// after the heal, when the node crash below makes it write.
	sc.Timeline = []Action{
		{At: sec(4), Do: DoPause, Target: "coordinator", Hold: "apply", For: sec(20)},
		{At: sec(20), Do: DoLeave, Target: "worker"},
	}
	sc.Expect = Expect{HealAt: &heal, ConvergeWithin: sec(30)}
	r, err := Run(sc, Options{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.Violation != nil {
		t.Fatal(r.Violation)
	}
	if n := r.Coverage["pause_between_decision_and_write"]; n != 0 {
		t.Fatalf("an armed pause began %d times after the heal", n)
	}
}

// TestClockBehindStore: a node clock may read before the store's (a negative
// clock_offset). Such a node must act from the start, not freeze until virtual time
// reaches its offset.
func TestClockBehindStore(t *testing.T) {
	sc := base("clock-behind", 40)
	sc.Nodes = []NodeGroup{{Prefix: "b", Count: 3, ClockOffset: Duration(-time.Hour), Drift: -0.005}, {Prefix: "n", Count: 2, ClockOffset: Duration(-90 * time.Second)}}
	sc.Expect = Expect{ConvergeWithin: sec(10), HealAt: new(Duration)}
	for seed := uint64(1); seed <= 3; seed++ {
		s, err := New(sc, Options{Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		s.RunUntil(5 * time.Second)
		if s.coordinator() == nil {
			t.Fatalf("seed %d: no coordinator 5s in: a clock behind the store froze its node", seed)
		}
		busy := 0
		for _, nd := range s.nodes {
			if nd.live(s.now) && len(nd.st.Owned) > 0 {
				busy++
			}
		}
		if busy != 5 {
			t.Fatalf("seed %d: %d of 5 nodes process partitions 5s in", seed, busy)
		}
		if r := s.Run(); !r.Passed {
			t.Fatalf("seed %d: %v", seed, r.Violation)
		}
	}
}

// TestTraceCoversWhatTheLogShows: every field an event's log line shows, and every
// field of an engine Event, changes the trace hash; so two runs whose logs differ
// cannot print the same trace.
func TestTraceCoversWhatTheLogShows(t *testing.T) {
	base := rec{seq: 1, at: 5, kind: evReply, node: "n1", op: "apply", id: 7, res: "ok", note: "", what: "crash n2"}
	hashOf := func(r rec, ev engine.Event) hasher {
		h := hasher(fnvOffset)
		h.effect(ev)
		h.rec(&r)
		return h
	}
	ev := engine.Event{Kind: "declared_dead", Epoch: 3, Node: "n2", Detail: "incarnation 1"}
	ref := hashOf(base, ev)
	recs := map[string]func(*rec){
		"op": func(r *rec) { r.op = "heartbeat" }, "id": func(r *rec) { r.id = 8 }, "res": func(r *rec) { r.res = "fenced" },
		"note": func(r *rec) { r.note = "reply lost" }, "what": func(r *rec) { r.what = "crash n3" },
	}
	for name, f := range recs {
		r := base
		f(&r)
		if hashOf(r, ev) == ref {
			t.Errorf("changing the line's %s leaves the trace unchanged", name)
		}
	}
	evs := map[string]func(*engine.Event){
		"kind": func(e *engine.Event) { e.Kind = "applied" }, "epoch": func(e *engine.Event) { e.Epoch = 4 },
		"node": func(e *engine.Event) { e.Node = "n3" }, "detail": func(e *engine.Event) { e.Detail = "incarnation 2" },
		"partition": func(e *engine.Event) { e.Partition = engine.PartitionID{Domain: "d", TaskList: "t", Partition: 1} },
	}
	for name, f := range evs {
		e := ev
		f(&e)
		if hashOf(base, e) == ref {
			t.Errorf("changing an event's %s leaves the trace unchanged", name)
		}
	}
	// The log's effect descriptions are not part of what is hashed from the line (the
	// effects themselves are): a logged and an unlogged run have the same trace.
	var log strings.Builder
	a, err := Run(small(), Options{Seed: 4, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Run(small(), Options{Seed: 4})
	if a.Trace != b.Trace || log.Len() == 0 {
		t.Fatalf("logged run trace %s, unlogged %s", a.Trace, b.Trace)
	}
}

// TestSummaryStatusSaysWhatFailed: the table's result column is "ok" only when every
// seed passed and every determinism check held, and otherwise names what failed.
func TestSummaryStatusSaysWhatFailed(t *testing.T) {
	var s Summary
	s.Add(&Result{Seed: 1, Passed: true})
	if s.Status() != "ok" || !s.OK() {
		t.Fatalf("status %q", s.Status())
	}
	s.AddDivergence(&Divergence{Seed: 2, Identical: true})
	s.AddDivergence(&Divergence{Seed: 3})
	if s.OK() || !strings.Contains(s.Status(), "NONDETERMINISTIC×1 seeds [3]") {
		t.Fatalf("a divergence must fail the summary: %q", s.Status())
	}
	s.Add(&Result{Seed: 4, Violation: &Violation{Invariant: "S3"}})
	s.Add(&Result{Seed: 5, ExpectedViolation: "S1"})
	st := s.Status()
	for _, want := range []string{"FAIL", "S3×1", "missing S1×1", "seeds [4 5]", "NONDETERMINISTIC"} {
		if !strings.Contains(st, want) {
			t.Errorf("status %q lacks %q", st, want)
		}
	}
}

// TestEpochRulesChecked: the checker's epoch rules (E1, E2) fail the run on a store
// reply that breaks them, and pass the replies a correct store gives.
func TestEpochRulesChecked(t *testing.T) {
	held := engine.Lease{Key: "coordinator", Owner: "n1", Epoch: 3, Status: engine.LeaseActive}
	for _, tc := range []struct {
		name          string
		op            engine.Op
		before        engine.Lease
		existed, live bool
		after         uint64
		want          string // "" = no violation
	}{
		{"renewal keeps the epoch", engine.OpRenewLease{Owner: "n1", Epoch: 3}, held, true, true, 3, ""},
		{"renewal raises the epoch", engine.OpRenewLease{Owner: "n1", Epoch: 3}, held, true, true, 4, "E1"},
		{"holder re-acquires what it holds", engine.OpAcquireLease{Owner: "n1"}, held, true, true, 3, ""},
		{"holder re-acquiring raises the epoch", engine.OpAcquireLease{Owner: "n1"}, held, true, true, 4, "E1"},
		{"new holder, higher epoch", engine.OpAcquireLease{Owner: "n2"}, held, true, false, 4, ""},
		{"new holder, same epoch", engine.OpAcquireLease{Owner: "n2"}, held, true, false, 3, "E2"},
		{"same node after losing it, same epoch", engine.OpAcquireLease{Owner: "n1"}, held, true, false, 3, "E2"},
		{"first grant", engine.OpAcquireLease{Owner: "n1"}, engine.Lease{}, false, false, 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(small(), Options{Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			s.check.issued = tc.before.Epoch
			after := tc.before
			after.Epoch = tc.after
			s.check.epochRules(s, tc.op, tc.before, tc.existed, tc.live, after)
			got := ""
			if s.viol != nil {
				got = s.viol.Invariant
			}
			if got != tc.want {
				t.Fatalf("violation %q, want %q (%v)", got, tc.want, s.viol)
			}
		})
	}
}

// TestFormatAdditionsValidated: the new fields are checked with the field and the rule.
func TestFormatAdditionsValidated(t *testing.T) {
	for _, tc := range []struct {
		a    Action
		want string
	}{
		{Action{At: sec(1), Do: DoPause, Target: "n1", For: sec(1), Hold: "write"}, "timeline[0].hold"},
		{Action{At: sec(1), Do: DoCrash, Target: "n1", For: sec(1), Permanent: true}, "timeline[0].permanent"},
		{Action{At: sec(1), Do: DoStoreFault, For: sec(1), Fault: "explode"}, "timeline[0].fault"},
		{Action{At: sec(1), Do: DoStoreFault, Fault: FaultDeadlock}, "timeline[0].for"},
		{Action{At: sec(1), Do: DoStoreFault, For: sec(1), Fault: FaultDeadlock, Rate: 2}, "timeline[0].rate"},
		{Action{At: sec(1), Do: DoCrash, Target: "n1", Fault: FaultDeadlock}, "timeline[0].fault"},
	} {
		sc := base("v", 10)
		sc.Timeline = []Action{tc.a}
		err := sc.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one naming %s", tc.a, err, tc.want)
		}
	}
	ok := base("v", 10)
	ok.Timeline = []Action{
		{At: sec(1), Do: DoPause, Target: "n1", For: sec(1), Hold: HoldRead},
		{At: sec(1), Do: DoCrash, Target: "n2", Permanent: true},
		{At: sec(1), Do: DoStoreFault, For: sec(1), Fault: FaultCommitThenError, Rate: 0.5},
	}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestPermanentCrashNotHealed: a node that dies for good is not restarted by the heal,
// and the liveness phase still passes over the others.
func TestPermanentCrashNotHealed(t *testing.T) {
	sc := base("gone", 40)
	sc.Expect = Expect{ConvergeWithin: sec(20)}
	sc.Timeline = []Action{{At: sec(10), Do: DoCrash, Target: "n3", Permanent: true}}
	s, err := New(sc, Options{Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	r := s.Run()
	if !r.Passed {
		t.Fatal(r.Violation)
	}
	if n := s.nodes[s.byID["n3"]]; n.up || n.restarts != 0 {
		t.Fatalf("n3 came back: up %v, restarts %d", n.up, n.restarts)
	}
}
