package storetest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
)

// testIdentity: one process per node identity. Registrations name their process; an
// exclusive registration (DeadAfter > 0) of an id whose live incarnation belongs to
// another process is refused, a Replace takes it over once the holder's registration has
// expired (refusing the holder's heartbeats meanwhile), a node's own updates are fenced
// by its incarnation, and lease owners are process tokens longer than a node id.
func testIdentity(t *testing.T, newStore func(t *testing.T) (engine.Store, Clock)) {
	spec := func(id, process, host string, pid int, deadAfter time.Duration) engine.NodeSpec {
		return engine.NodeSpec{ID: id, Capacity: 1, Process: process, Host: host, PID: pid, DeadAfter: deadAfter}
	}
	inUse := func(t *testing.T, err error) *engine.NodeInUseError {
		t.Helper()
		var e *engine.NodeInUseError
		if !errors.Is(err, engine.ErrNodeInUse) || !errors.As(err, &e) {
			t.Fatalf("error = %v (%s), want a *NodeInUseError wrapping ErrNodeInUse", err, kindOf(err))
		}
		return e
	}

	t.Run("a live id is refused to another process, with who holds it and until when", func(t *testing.T) {
		h := newHarness(t, newStore)
		r, err := h.s.RegisterNode(h.ctx, spec("A", "A#p1", "host-1", 11, long))
		h.must(err, "RegisterNode(A, p1)")
		before := h.dump()
		_, err = h.s.RegisterNode(h.ctx, spec("A", "A#p2", "host-2", 22, long))
		e := inUse(t, err)
		h.sameDump(before, "a refused registration")
		if e.ID != "A" || e.Incarnation != r.Incarnation || e.Holder != (engine.NodeProcess{Process: "A#p1", Host: "host-1", PID: 11}) || e.Pending {
			t.Fatalf("refusal %+v: want id A, incarnation %d, holder A#p1 on host-1 pid 11, not pending", e, r.Incarnation)
		}
		if !e.ExpiresAt.Equal(e.LastHeartbeat.Add(long)) || e.Now.Before(e.LastHeartbeat) || !e.Now.Before(e.ExpiresAt) {
			t.Fatalf("refusal times: heartbeat %v, now %v, expires %v; want expires = heartbeat + %v, heartbeat ≤ now < expires", e.LastHeartbeat, e.Now, e.ExpiresAt, long)
		}
		for _, want := range []string{`"A"`, "host-1", "pid 11", "expires in"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("message %q does not mention %s", err, want)
			}
		}
		// The same process may register again (its retry after a lost reply).
		r2, err := h.s.RegisterNode(h.ctx, spec("A", "A#p1", "host-1", 11, long))
		h.must(err, "RegisterNode(A, p1) again")
		if r2.Incarnation != r.Incarnation+1 {
			t.Fatalf("re-registration by the same process: incarnation %d, want %d", r2.Incarnation, r.Incarnation+1)
		}
		n := h.node("A")
		if n.Process != "A#p1" || n.Host != "host-1" || n.PID != 11 || n.ReplaceBy != (engine.NodeProcess{}) {
			t.Fatalf("listed %+v: want process A#p1 on host-1 pid 11, no replacement", n)
		}
		// Without DeadAfter a registration is not exclusive (tools, tests): it replaces.
		r3, err := h.s.RegisterNode(h.ctx, spec("A", "A#p3", "host-3", 33, 0))
		h.must(err, "RegisterNode(A, p3, not exclusive)")
		if r3.Incarnation != r2.Incarnation+1 || h.node("A").Host != "host-3" {
			t.Fatalf("non-exclusive registration: incarnation %d host %q", r3.Incarnation, h.node("A").Host)
		}
	})

	t.Run("an expired or dead holder does not block", func(t *testing.T) {
		h := newHarness(t, newStore)
		_, err := h.s.RegisterNode(h.ctx, spec("A", "A#p1", "host-1", 11, short))
		h.must(err, "RegisterNode(A, p1)")
		h.c.Advance(wait) // heartbeat older than short: the holder has stopped by its own timer
		r, err := h.s.RegisterNode(h.ctx, spec("A", "A#p2", "host-2", 22, short))
		h.must(err, "RegisterNode(A, p2) after the expiry")
		if r.Incarnation != 2 || h.node("A").Process != "A#p2" || h.node("A").PID != 22 {
			t.Fatalf("incarnation %d, row %+v: want 2, process A#p2 pid 22", r.Incarnation, h.node("A"))
		}
		_, err = h.s.DeregisterNode(h.ctx, "A", 2)
		h.must(err, "DeregisterNode(A/2)")
		r, err = h.s.RegisterNode(h.ctx, spec("A", "A#p3", "host-3", 33, long))
		h.must(err, "RegisterNode(A, p3) after a graceful leave")
		if r.Incarnation != 3 {
			t.Fatalf("incarnation %d, want 3", r.Incarnation)
		}
	})

	t.Run("replace: the holder's heartbeats are refused, the id is taken at the expiry", func(t *testing.T) {
		h := newHarness(t, newStore)
		r, err := h.s.RegisterNode(h.ctx, spec("A", "A#p1", "host-1", 11, mid))
		h.must(err, "RegisterNode(A, p1)")
		repl := spec("A", "A#p2", "host-2", 22, mid)
		repl.Replace = true
		_, err = h.s.RegisterNode(h.ctx, repl)
		e := inUse(t, err)
		if !e.Pending || e.By != (engine.NodeProcess{Process: "A#p2", Host: "host-2", PID: 22}) || e.Holder.Process != "A#p1" {
			t.Fatalf("refusal %+v: want pending, by A#p2 (host-2, 22), holder A#p1", e)
		}
		if n := h.node("A"); n.Incarnation != r.Incarnation || n.Status != engine.NodeAlive || n.ReplaceBy.Process != "A#p2" {
			t.Fatalf("row %+v: want incarnation %d alive (its partitions stay its own), ReplaceBy A#p2", n, r.Incarnation)
		}
		_, err = h.s.Heartbeat(h.ctx, "A", r.Incarnation, 0)
		checkErr(t, err, engine.ErrNodeDead, "")
		// The holder, told it is dead, may not take the id back; nor may a third process.
		_, err = h.s.RegisterNode(h.ctx, spec("A", "A#p1", "host-1", 11, mid))
		if e := inUse(t, err); e.Pending || e.By.Process != "A#p2" || !strings.Contains(err.Error(), "host-2") {
			t.Fatalf("the holder's re-registration: %v; want refused, naming the replacer on host-2", err)
		}
		_, err = h.s.RegisterNode(h.ctx, spec("A", "A#p3", "host-3", 33, mid))
		if e := inUse(t, err); e.By.Process != "A#p2" {
			t.Fatalf("a third process: %v; want refused, naming the replacer", err)
		}
		// The replacer retried before the expiry (say, after a lost reply): still pending,
		// the same refusal as the first, and the takeover stands — the holder's heartbeats
		// stay refused (a retry once cleared ReplaceBy and so let the holder live on).
		_, err = h.s.RegisterNode(h.ctx, repl)
		if e := inUse(t, err); !e.Pending || e.By != (engine.NodeProcess{Process: "A#p2", Host: "host-2", PID: 22}) {
			t.Fatalf("the replacer's early retry: %v (%+v), want pending, by A#p2 (host-2, 22)", err, e)
		}
		if n := h.node("A"); n.Incarnation != r.Incarnation || n.ReplaceBy.Process != "A#p2" {
			t.Fatalf("row %+v after the replacer's early retry: want incarnation %d, ReplaceBy A#p2", n, r.Incarnation)
		}
		_, err = h.s.Heartbeat(h.ctx, "A", r.Incarnation, 0)
		checkErr(t, err, engine.ErrNodeDead, "")
		h.c.Advance(midWait)
		r2, err := h.s.RegisterNode(h.ctx, repl)
		h.must(err, "RegisterNode(A, p2, replace) after the expiry")
		n := h.node("A")
		if r2.Incarnation != r.Incarnation+1 || n.Process != "A#p2" || n.ReplaceBy != (engine.NodeProcess{}) || n.Status != engine.NodeAlive {
			t.Fatalf("after the takeover: incarnation %d, row %+v; want %d, process A#p2, no pending replacement", r2.Incarnation, n, r.Incarnation+1)
		}
		h.heartbeat("A", r2.Incarnation, 0)
	})

	t.Run("a node's own update is fenced by its incarnation", func(t *testing.T) {
		h := newHarness(t, newStore)
		h.register("A", 1)
		inc2 := h.register("A", 1)
		before := h.dump()
		d := true
		_, err := h.s.UpdateNode(h.ctx, "A", engine.NodeUpdate{Incarnation: inc2 - 1, Draining: &d})
		checkErr(t, err, engine.ErrNodeDead, "")
		h.sameDump(before, "an update by a replaced incarnation")
		_, err = h.s.UpdateNode(h.ctx, "A", engine.NodeUpdate{Incarnation: inc2, Draining: &d})
		h.must(err, "UpdateNode by the current incarnation")
		if !h.node("A").Draining {
			t.Fatal("the current incarnation's update did not apply")
		}
		_, err = h.s.DeregisterNode(h.ctx, "A", inc2)
		h.must(err, "DeregisterNode")
		u := false
		_, err = h.s.UpdateNode(h.ctx, "A", engine.NodeUpdate{Incarnation: inc2, Draining: &u})
		checkErr(t, err, engine.ErrNodeDead, "")
		_, err = h.s.UpdateNode(h.ctx, "Z", engine.NodeUpdate{Incarnation: 1, Draining: &u})
		checkErr(t, err, engine.ErrNotFound, "")
		// An operator's update (no incarnation) still applies whatever the status.
		_, err = h.s.UpdateNode(h.ctx, "A", engine.NodeUpdate{Draining: &u})
		h.must(err, "UpdateNode by an operator")
	})

	t.Run("lease owners are process tokens", func(t *testing.T) {
		h := newHarness(t, newStore)
		id := strings.Repeat("n", engine.MaxNameBytes)
		owner := engine.LeaseOwner(id, strings.Repeat("7", engine.MaxNonceBytes))
		if len(owner) != engine.MaxOwnerBytes {
			t.Fatalf("owner of %d bytes, want %d", len(owner), engine.MaxOwnerBytes)
		}
		l := h.acquire("k1", owner, long).Lease
		if got := h.lease("k1"); got.Owner != owner || engine.OwnerNodeID(got.Owner) != id {
			t.Fatalf("owner read back %q", got.Owner)
		}
		// Another process of the same node is another owner: no renewal, no shared epoch.
		_, err := h.s.AcquireLease(h.ctx, "k1", engine.LeaseOwner(id, "other"), long)
		checkErr(t, err, engine.ErrLeaseHeld, "")
		h.release("k1", owner, l.Epoch)
		_, err = h.s.AcquireLease(h.ctx, "k1", owner+"x", long)
		checkErr(t, err, engine.ErrInvalid, "lease.owner")
	})

	t.Run("process fields are validated", func(t *testing.T) {
		h := newHarness(t, newStore)
		before := h.dump()
		for _, c := range []struct {
			spec  engine.NodeSpec
			field string
		}{
			{engine.NodeSpec{ID: "A", Capacity: 1, Process: strings.Repeat("p", engine.MaxOwnerBytes+1)}, "node.process"},
			{engine.NodeSpec{ID: "A", Capacity: 1, Process: "A#\x01"}, "node.process"},
			{engine.NodeSpec{ID: "A", Capacity: 1, Host: strings.Repeat("h", engine.MaxHostBytes+1)}, "node.host"},
			{engine.NodeSpec{ID: "A", Capacity: 1, PID: -1}, "node.pid"},
			{engine.NodeSpec{ID: "A", Capacity: 1, DeadAfter: -time.Second}, "node.dead_after"},
		} {
			_, err := h.s.RegisterNode(h.ctx, c.spec)
			checkErr(t, err, engine.ErrInvalid, c.field)
		}
		h.sameDump(before, "invalid registrations")
	})
}
