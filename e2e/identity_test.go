package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

// TestDuplicateID runs real `helix node` processes on MariaDB and starts a second process
// with the id of a live one — the coordinator's, then a worker's — then takes a worker's
// id over with --replace. Before, the duplicate got the lease at the same epoch (two
// coordinators), the two workers evicted each other's registration in a loop, and a
// duplicate's graceful exit left the survivor draining.
func TestDuplicateID(t *testing.T) {
	dsn := mysqltest.DSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := Fast
	c := migratedCluster(t, ctx, dsn, t.TempDir(), p, map[string]int{"dup": 32})
	defer func() {
		c.Shutdown(15 * time.Second)
		if t.Failed() {
			for _, pr := range c.Procs() {
				t.Logf("log of %s: %s", pr.ID, pr.LogPath)
			}
		}
	}()
	procs := map[string]*Proc{}
	for _, id := range []string{"n1", "n2"} {
		pr, err := c.Start(id, "")
		if err != nil {
			t.Fatal(err)
		}
		procs[id] = pr
	}
	live := []string{"n1", "n2"}
	mustPoll(t, ctx, c, "balance over n1, n2", 30*time.Second, func(cs helix.ClusterStatus) (bool, string) {
		return cs.Coordinator.Held && func() bool { ok, _ := Balanced(cs, live); return ok }(), fmt.Sprintf("%+v", cs.Coordinator)
	})
	cs, _ := c.Status(ctx)
	coord, epoch := cs.Coordinator.Owner, cs.Coordinator.Epoch
	worker := without(live, coord)[0]
	if !strings.HasPrefix(cs.Coordinator.Process, coord+"#") {
		t.Errorf("lease owner %q: want the node id %s, '#', a nonce", cs.Coordinator.Process, coord)
	}
	incs := incarnations(cs)
	host, _ := os.Hostname()

	// 1. A duplicate of the coordinator's id, then of the worker's: each exits 1 within
	//    dead_after (+ start-up slack), naming the id, the holder's host and pid and the
	//    expiry, never leading; the first processes keep everything.
	for _, id := range []string{coord, worker} {
		startAt := time.Now()
		dup, err := c.Start(id, "")
		if err != nil {
			t.Fatal(err)
		}
		err = dup.Wait(p.DeadAfter + 10*time.Second)
		t.Logf("duplicate of %s: exited after %v (%v)", id, time.Since(startAt).Round(time.Millisecond), err)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("duplicate of %s: %v, want exit status 1", id, err)
		}
		out, _ := os.ReadFile(dup.LogPath)
		for _, want := range []string{fmt.Sprintf(`node id \"%s\" is held by another live process`, id),
			fmt.Sprintf("host %s, pid %d", host, procs[id].cmd.Process.Pid), "expires in", "--replace"} {
			if !strings.Contains(string(out), want) && !strings.Contains(strings.ReplaceAll(string(out), `\"`, `"`), strings.ReplaceAll(want, `\"`, `"`)) {
				t.Errorf("duplicate of %s: its output does not say %q:\n%s", id, want, out)
			}
		}
		if ts, _ := EventTimes(dup, "became_coordinator"); len(ts) > 0 {
			t.Errorf("the duplicate of %s became coordinator", id)
		}
	}
	cs, _ = c.Status(ctx)
	if cs.Coordinator.Owner != coord || cs.Coordinator.Epoch != epoch {
		t.Errorf("coordinator %s epoch %d → %s epoch %d: the duplicates disturbed the lease", coord, epoch, cs.Coordinator.Owner, cs.Coordinator.Epoch)
	}
	if got := incarnations(cs); got[coord] != incs[coord] || got[worker] != incs[worker] {
		t.Errorf("incarnations %v → %v: the duplicates disturbed the registrations", incs, got)
	}
	if ok, why := Balanced(cs, live); !ok || draining(cs) != "" {
		t.Errorf("after the duplicates: balanced %v (%s), draining %q", ok, why, draining(cs))
	}

	// 2. A duplicate that is stopped gracefully (SIGTERM) before it is refused leaves the
	//    first process alone: exit 0, and the first is neither draining nor replaced.
	dup, err := c.Start(worker, "")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // an e2e poll: let it start and be refused once
	if err := dup.Term(); err != nil {
		t.Fatal(err)
	}
	if err := dup.Wait(10 * time.Second); err != nil {
		t.Errorf("SIGTERM of the waiting duplicate: %v, want exit 0", err)
	}
	cs, _ = c.Status(ctx)
	if d := draining(cs); d != "" || incarnations(cs)[worker] != incs[worker] {
		t.Errorf("after the duplicate's graceful exit: draining %q, incarnation %d (was %d)", d, incarnations(cs)[worker], incs[worker])
	}

	// 3. --replace takes the worker's id over: the old process exits 1 saying it was
	//    replaced (by this host and the new pid), the new one registers the next
	//    incarnation and takes the worker's share; nothing is processed twice.
	replAt := time.Now()
	repl, err := c.Start(worker, "", "--replace")
	if err != nil {
		t.Fatal(err)
	}
	err = procs[worker].Wait(p.DeadAfter + 10*time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("replaced %s: %v, want exit status 1", worker, err)
	}
	t.Logf("--replace of %s: the old process exited after %v", worker, time.Since(replAt).Round(time.Millisecond))
	out, _ := os.ReadFile(procs[worker].LogPath)
	if s := string(out); !strings.Contains(s, "replaced by another process") || !strings.Contains(s, fmt.Sprintf("pid %d", repl.cmd.Process.Pid)) {
		t.Errorf("the replaced process does not say it was replaced, by pid %d:\n%s", repl.cmd.Process.Pid, s)
	}
	took := mustPoll(t, ctx, c, "the replacement to take the worker's share", 20*time.Second, func(cs helix.ClusterStatus) (bool, string) {
		if incarnations(cs)[worker] != incs[worker]+1 {
			return false, fmt.Sprintf("incarnations %v", incarnations(cs))
		}
		for _, n := range cs.Nodes {
			if n.ID == worker && n.PID != repl.cmd.Process.Pid {
				return false, fmt.Sprintf("%s registered by pid %d", worker, n.PID)
			}
		}
		return Balanced(cs, live)
	})
	t.Logf("--replace: %s taken over and rebalanced after %v", worker, took.Round(time.Millisecond))
	time.Sleep(2 * p.DeadAfter) // no eviction loop: the incarnation stays
	cs, _ = c.Status(ctx)
	if incarnations(cs)[worker] != incs[worker]+1 || draining(cs) != "" {
		t.Errorf("after the replacement settled: incarnations %v, draining %q", incarnations(cs), draining(cs))
	}
	for _, pr := range []*Proc{procs[coord], repl} {
		if err := pr.Term(); err != nil {
			t.Fatal(err)
		}
		if err := pr.Wait(15 * time.Second); err != nil {
			t.Errorf("SIGTERM of %s: %v, want exit 0", pr.ID, err)
		}
	}
	all, err := Intervals(c.Procs())
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range Overlaps(all) {
		t.Error(bad)
	}
}

func incarnations(cs helix.ClusterStatus) map[string]uint64 {
	m := map[string]uint64{}
	for _, n := range cs.Nodes {
		m[n.ID] = n.Incarnation
	}
	return m
}

// draining names a node whose state is draining, or "".
func draining(cs helix.ClusterStatus) string {
	for _, n := range cs.Nodes {
		if n.State == "draining" {
			return n.ID
		}
	}
	return ""
}
