package mysqlstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
)

// TestPruneNodesKeepsWhatFencingNeeds: dead and deregistered nodes older than the
// retention are deleted, live ones and recent dead ones are kept; a pruned
// incarnation's heartbeat is refused, and a pruned id registering again — or any new
// id — gets an incarnation above every one ever issued, so a zombie of the old one
// can never match it.
func TestPruneNodesKeepsWhatFencingNeeds(t *testing.T) {
	dsn := migratedDSN(t)
	ctx := context.Background()
	s := openStore(t, dsn, "")
	other := openStore(t, dsn, "other") // another cluster in the database is untouched
	reg := func(st interface {
		RegisterNode(context.Context, engine.NodeSpec) (engine.RegisterReply, error)
	}, id string) uint64 {
		t.Helper()
		r, err := st.RegisterNode(ctx, engine.NodeSpec{ID: id, Capacity: 1})
		if err != nil {
			t.Fatal(err)
		}
		return r.Incarnation
	}
	var old uint64
	for range 5 {
		old = reg(s, "old") // incarnations 1..5
	}
	deadRecent := reg(s, "dead-recent")
	reg(s, "live")
	otherOld := reg(other, "old")
	for _, d := range []struct {
		st interface {
			DeregisterNode(context.Context, string, uint64) (engine.Reply, error)
		}
		id  string
		inc uint64
	}{{s, "old", old}, {s, "dead-recent", deadRecent}, {other, "old", otherOld}} {
		if _, err := d.st.DeregisterNode(ctx, d.id, d.inc); err != nil {
			t.Fatal(err)
		}
	}
	// "old" (both clusters) and "live" last heartbeated two hours ago.
	if _, err := s.DB().ExecContext(ctx, "UPDATE helix_nodes SET last_heartbeat = UTC_TIMESTAMP(6) - INTERVAL 2 HOUR WHERE id IN ('old', 'live')"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PruneNodes(ctx, 0); !errors.Is(err, engine.ErrInvalid) {
		t.Fatalf("PruneNodes(0): %v, want a validation error", err)
	}
	n, err := s.PruneNodes(ctx, time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("PruneNodes: %d, %v; want 1 (old)", n, err)
	}
	if n, err := s.PruneNodes(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("second PruneNodes: %d, %v; want 0", n, err)
	}
	ids := func(st interface {
		ListNodes(context.Context) (engine.NodesReply, error)
	}) []string {
		r, err := st.ListNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, n := range r.Nodes {
			out = append(out, n.ID)
		}
		return out
	}
	if got := ids(s); len(got) != 2 || got[0] != "dead-recent" || got[1] != "live" {
		t.Fatalf("nodes after pruning: %v, want dead-recent and live (alive, however old its heartbeat)", got)
	}
	if got := ids(other); len(got) != 1 {
		t.Fatalf("the other cluster's nodes: %v, want its old node kept", got)
	}
	if _, err := s.Heartbeat(ctx, "old", old, 0); !errors.Is(err, engine.ErrNodeDead) {
		t.Fatalf("heartbeat of a pruned incarnation: %v, want ErrNodeDead", err)
	}
	if inc := reg(s, "old"); inc <= old {
		t.Fatalf("re-registered pruned id got incarnation %d, want > %d", inc, old)
	}
	if inc := reg(s, "brand-new"); inc <= old {
		t.Fatalf("a new id after pruning got incarnation %d, want > %d", inc, old)
	}
	if inc := reg(other, "fresh"); inc != 1 {
		t.Fatalf("a new id in a cluster that pruned nothing got incarnation %d, want 1", inc)
	}
	// The floor row is no lease: the coordinator lease still starts at epoch 1.
	l, err := s.AcquireLease(ctx, "coordinator", "x", time.Minute)
	if err != nil || l.Lease.Epoch != 1 {
		t.Fatalf("lease after pruning: %+v %v", l, err)
	}
}
