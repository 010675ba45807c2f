package engine_test

// One process per node identity (issue 10 §1): a second process started with the id of a
// live node must never share the first one's lease epoch, is refused once the first one
// proves alive, takes over only with Replace, and a replaced process stops instead of
// evicting its successor in a loop.

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
)

// startDuplicate starts one more process with node i's id, a nonce of its own and the
// given Replace flag, and returns its index.
func (d *driver) startDuplicate(i int, nonce string, replace bool) int {
	d.t.Helper()
	cfg := engine.Config{NodeID: d.nodes[i].id, Nonce: nonce, Host: "host-b", PID: 4242, Replace: replace}
	n, err := engine.NewNode(cfg, 999)
	if err != nil {
		d.t.Fatal(err)
	}
	d.nodes = append(d.nodes, &dnode{id: cfg.NodeID, n: n, running: map[engine.PartitionID]uint64{}})
	j := len(d.nodes) - 1
	d.step(j, engine.Tick{})
	return j
}

// stoppedWith runs until node j emits Stopped (or limit passes) and returns its error.
func (d *driver) stoppedWith(j int, limit time.Duration) (error, bool) {
	if _, ok := d.until(limit, func() bool { return d.nodes[j].stopped }); !ok {
		return nil, false
	}
	return d.nodes[j].stopErr, true
}

func (d *driver) nodeRow(id string) engine.NodeInfo {
	d.t.Helper()
	for _, n := range d.store.Snapshot().Nodes {
		if n.ID == id {
			return n
		}
	}
	d.t.Fatalf("no row for node %s", id)
	return engine.NodeInfo{}
}

func TestNodeLeaseOwnerIsProcessToken(t *testing.T) {
	a, err := engine.NewNode(engine.Config{NodeID: "w1", Nonce: "aaa"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if a.Owner() != "w1#aaa" || engine.OwnerNodeID(a.Owner()) != "w1" {
		t.Fatalf("owner %q (node %q), want w1#aaa (w1)", a.Owner(), engine.OwnerNodeID(a.Owner()))
	}
	// Without a nonce it is derived from the seed: deterministic, distinct per seed.
	b1, _ := engine.NewNode(engine.Config{NodeID: "w1"}, 7)
	b2, _ := engine.NewNode(engine.Config{NodeID: "w1"}, 7)
	c, _ := engine.NewNode(engine.Config{NodeID: "w1"}, 8)
	if b1.Owner() != b2.Owner() || b1.Owner() == c.Owner() || b1.Owner() == "w1" {
		t.Fatalf("derived owners %q %q %q: want equal for one seed, different across seeds, never the bare id", b1.Owner(), b2.Owner(), c.Owner())
	}
	for _, nonce := range []string{"has space", "ü", strings.Repeat("x", 33)} {
		_, err := engine.NewNode(engine.Config{NodeID: "w1", Nonce: nonce}, 1)
		var ve *engine.ValidationError
		if !errors.As(err, &ve) || ve.Field != "config.Nonce" {
			t.Errorf("nonce %q: %v, want a validation error naming config.Nonce", nonce, err)
		}
	}
}

// A duplicate of the coordinator's id: without process tokens it re-acquired the lease at
// the same epoch and both led (the driver's S1 check fails the test). Now it never
// leads while the first does, it is refused once the first heartbeats on, and the first
// keeps its incarnation, its partitions and its drain flag.
func TestDriverDuplicateIDRefused(t *testing.T) {
	d := newDriver(t, 3, tl20)
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
		t.Fatalf("not converged: %v", d.counts())
	}
	c := d.coordinator()
	id := d.nodes[c].id
	before := d.nodeRow(id)
	owned := len(d.nodes[c].running)
	epoch := d.nodes[c].n.State().Epoch
	startAt := d.now
	dup := d.startDuplicate(c, "dup", false)
	err, ok := d.stoppedWith(dup, 2*defaults().DeadAfter)
	if !ok {
		t.Fatalf("the duplicate of %s did not stop within 2 × dead_after", id)
	}
	took := d.now.Sub(startAt)
	var held *engine.NodeInUseError
	if !errors.As(err, &held) || held.ID != id || held.Incarnation != before.Incarnation {
		t.Fatalf("Stopped.Err %v: want a *NodeInUseError naming %s incarnation %d", err, id, before.Incarnation)
	}
	if err == nil || !strings.Contains(err.Error(), id) || !strings.Contains(err.Error(), "another live process") || !strings.Contains(err.Error(), "expires in") {
		t.Fatalf("refusal %v: want the id, 'another live process' and when it expires", err)
	}
	if took > defaults().DeadAfter+time.Second {
		t.Errorf("refused after %v, want within dead_after (%v) + 1s", took, defaults().DeadAfter)
	}
	if _, ok := d.firstEvent(dup, "became_coordinator", startAt); ok {
		t.Errorf("the duplicate became coordinator while %s led", id)
	}
	if _, ok := d.firstEvent(dup, "registered", startAt); ok {
		t.Errorf("the duplicate registered")
	}
	d.runFor(10 * time.Second)
	after := d.nodeRow(id)
	if after.Incarnation != before.Incarnation || after.Status != engine.NodeAlive || after.Draining {
		t.Errorf("the first process's row changed: %+v → %+v", before, after)
	}
	if s := d.nodes[c].n.State(); !s.Coordinator || s.Epoch != epoch || len(d.nodes[c].running) != owned {
		t.Errorf("first process: coordinator %v epoch %d (was %d) running %d (was %d)", s.Coordinator, s.Epoch, epoch, len(d.nodes[c].running), owned)
	}
	if !d.converged(20) {
		t.Errorf("not converged after the duplicate left: %v", d.counts())
	}
}

// A process restarted right after a crash finds its predecessor's registration still
// alive: it waits for it to expire (nobody heartbeats it) and then registers.
func TestDriverRestartAfterCrashWaitsForExpiry(t *testing.T) {
	d := newDriver(t, 3, tl20)
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
		t.Fatalf("not converged: %v", d.counts())
	}
	w := (d.coordinator() + 1) % 3
	d.crash(w)
	d.runFor(200 * time.Millisecond)
	d.restart(w, 77)
	if _, ok := d.until(2*defaults().DeadAfter, func() bool { return d.nodes[w].n.State().Registered }); !ok {
		t.Fatal("the restarted process did not register within 2 × dead_after")
	}
	if _, ok := d.firstEvent(w, "registration_waiting", t0); !ok {
		t.Error("no registration_waiting event: the predecessor's live registration was not noticed")
	}
	if d.nodes[w].stopped {
		t.Error("the restarted process stopped")
	}
}

// Replace takes the id over from a process that is cut off (the case it exists for): the
// takeover completes once the old registration expires, and when the old process comes
// back and exits gracefully, its drain-flag write (fenced by its incarnation) and its
// deregistration leave the successor alone — before, the survivor was left draining.
func TestDriverReplace(t *testing.T) {
	d := newDriver(t, 3, tl20)
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
		t.Fatalf("not converged: %v", d.counts())
	}
	old := (d.coordinator() + 1) % 3
	id := d.nodes[old].id
	inc := d.nodeRow(id).Incarnation
	d.nodes[old].cut = true
	startAt := d.now
	nw := d.startDuplicate(old, "new", true)
	if _, ok := d.until(2*defaults().DeadAfter, func() bool { return d.nodes[nw].n.State().Registered }); !ok {
		t.Fatal("the replacement did not register within 2 × dead_after")
	}
	if took := d.now.Sub(startAt); took > defaults().DeadAfter+time.Second {
		t.Errorf("takeover took %v, want within dead_after + 1s", took)
	}
	// The old process comes back and is asked to shut down before it learns anything.
	d.nodes[old].cut = false
	d.step(old, engine.Shutdown{})
	if _, ok := d.stoppedWith(old, 3*defaults().DeadAfter); !ok {
		t.Fatal("the replaced process did not stop")
	}
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) && len(d.nodes[nw].running) > 0 }); !ok {
		t.Fatalf("not converged with the replacement: %v", d.counts())
	}
	d.runFor(20 * time.Second)
	row := d.nodeRow(id)
	if row.Incarnation != inc+1 || row.Draining || row.Status != engine.NodeAlive || row.Host != "host-b" || row.PID != 4242 {
		t.Errorf("row after the replacement %+v: want incarnation %d, alive, not draining, host-b/4242", row, inc+1)
	}
	if len(d.nodes[nw].running) == 0 {
		t.Errorf("the replacement runs nothing: %v", d.counts())
	}
}

// A process that was replaced while running (it had registered) stops with an error
// saying so, instead of taking the id back.
func TestDriverReplacedWhileRunningStops(t *testing.T) {
	d := newDriver(t, 3, tl20)
	if _, ok := d.until(30*time.Second, func() bool { return d.converged(20) }); !ok {
		t.Fatalf("not converged: %v", d.counts())
	}
	old := (d.coordinator() + 1) % 3
	id := d.nodes[old].id
	d.startDuplicate(old, "new", true)
	err, ok := d.stoppedWith(old, 10*time.Second)
	if !ok {
		t.Fatal("the replaced process did not stop")
	}
	if !errors.Is(err, engine.ErrNodeInUse) || !strings.Contains(err.Error(), "replaced") {
		t.Errorf("Stopped.Err %v: want ErrNodeInUse saying it was replaced", err)
	}
	var detail string
	for _, e := range d.nodes[old].events {
		if e.Kind == "replaced" {
			detail = e.Detail
		}
	}
	if !strings.Contains(detail, "host-b") || !strings.Contains(detail, "pid 4242") {
		t.Errorf("replaced event %q: want the new holder's host and pid", detail)
	}
	d.runFor(20 * time.Second)
	if n := d.nodeRow(id); n.Incarnation != 2 || n.Status != engine.NodeAlive || n.Host != "host-b" {
		t.Errorf("row %+v: want incarnation 2 of host-b, alive (one replacement, no loop)", n)
	}
	if !d.converged(20) {
		t.Errorf("not converged after the replacement: %v", d.counts())
	}
}
