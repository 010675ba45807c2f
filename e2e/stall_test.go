package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

// A client that stalls while it holds row locks — its process frozen (SIGSTOP), or its
// network cut with even the FIN lost, so that the server keeps its session — must not
// keep the rest of the cluster from making progress for longer than the lease TTL + 2s.
// A fault-injecting proxy in front of one `helix node` strikes right after the server
// ran that node's locking read:
//
//   - coordinator: the lease row (inside Apply, which holds the revision row too). Measured:
//     the time until another node is coordinator and has committed a batch.
//   - worker: the revision row (inside AckRelease, after a release). Measured: the time
//     until the coordinator commits a batch again, and until an admin's `helix tasklist
//     put` (another writer of the revision row) gets through.
//
// HELIX_STALL_RUNS=n repeats each case n times (default 1) to show the spread;
// HELIX_STALL_PROFILE=fast runs the nodes with --profile fast (lease 2s) instead of the
// default timings (lease 6s).
func TestStalledClientDoesNotStallCluster(t *testing.T) {
	server := mysqltest.ServerDSN(t)
	runs := 1
	if v := os.Getenv("HELIX_STALL_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("HELIX_STALL_RUNS=%q: must be an integer ≥ 1", v)
		}
		runs = n
	}
	bin, err := Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := Default
	if os.Getenv("HELIX_STALL_PROFILE") == "fast" {
		p = Fast
	}
	bound := p.LeaseTTL + 2*time.Second
	for _, c := range []struct {
		name  string
		run   func(t *testing.T, ctx context.Context, c *Cluster, f fault) time.Duration
		fault fault
	}{
		{"coordinator/SIGSTOP", stallCoordinator, freeze},
		{"coordinator/cut-lost-FIN", stallCoordinator, blackHole},
		{"worker/SIGSTOP", stallWorker, freeze},
		{"worker/cut-lost-FIN", stallWorker, blackHole},
	} {
		t.Run(c.name, func(t *testing.T) {
			var took []time.Duration
			for i := range runs {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				cl := newStallCluster(t, ctx, bin, mysqltest.NewDatabase(t, server), p)
				d := c.run(t, ctx, cl, c.fault)
				cancel()
				took = append(took, d)
				t.Logf("run %d: others progressed %v after the stall (bound lease TTL %v + 2s = %v)", i+1, d.Round(time.Millisecond), p.LeaseTTL, bound)
				if d > bound {
					t.Errorf("run %d: the others made no progress for %v, more than lease TTL + 2s (%v)", i+1, d.Round(time.Millisecond), bound)
				}
			}
			slices.Sort(took)
			t.Logf("%s over %d runs: min %v, median %v, max %v", c.name, runs,
				took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
		})
	}
}

// fault is how the node behind the proxy stalls once the armed statement has run.
type fault int

const (
	freeze    fault = iota // SIGSTOP the process
	blackHole              // cut its network; the server never learns the connection died
)

// stall arms proxy to stall victim with f right after the server runs a statement
// whose text contains every one of words; the returned channel yields the moment.
func stall(t *testing.T, proxy *Proxy, victim *Proc, f fault, words ...string) <-chan time.Time {
	t.Helper()
	at := make(chan time.Time, 1)
	if f == blackHole {
		proxy.LoseFIN()
	}
	proxy.Arm(func(q string) bool {
		for _, w := range words {
			if !strings.Contains(q, w) {
				return false
			}
		}
		return true
	}, func() {
		if f == freeze {
			if err := victim.Stop(); err != nil {
				t.Errorf("SIGSTOP %s: %v", victim.ID, err)
			}
		} else {
			proxy.Cut()
		}
		at <- time.Now()
	})
	t.Cleanup(func() {
		_ = victim.Cont()
		proxy.Heal()
	})
	return at
}

func newStallCluster(t *testing.T, ctx context.Context, bin, dsn string, p Profile) *Cluster {
	t.Helper()
	dir := t.TempDir()
	boot := &Cluster{Bin: bin, DSN: dsn, Dir: dir, Profile: p}
	if _, err := boot.Helix(ctx, "migrate"); err != nil {
		t.Fatal(err)
	}
	if _, err := boot.Helix(ctx, "tasklist", "put", "--domain", "e2e", "alpha", "16"); err != nil {
		t.Fatal(err)
	}
	c, err := NewCluster(ctx, bin, dsn, dir, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Shutdown(20 * time.Second); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if t.Failed() {
			for _, pr := range c.Procs() {
				t.Logf("log of %s: %s", pr.ID, pr.LogPath)
			}
		}
	})
	return c
}

// leaseRow reads the coordinator lease's epoch and last batch marker (a plain read: it
// never waits for a lock).
func leaseRow(ctx context.Context, c *Cluster) (epoch uint64, batch []byte, err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err = c.Store().DB().QueryRowContext(ctx, "SELECT epoch, last_batch FROM helix_leases WHERE cluster = ? AND lock_key = ?",
		c.Store().Cluster(), "coordinator").Scan(&epoch, &batch)
	return epoch, batch, err
}

// waitProgress polls the lease row every 20ms until cond holds, up to limit after
// since; it returns how long after since that was (limit and an error if never).
func waitProgress(ctx context.Context, c *Cluster, since time.Time, limit time.Duration, cond func(epoch uint64, batch []byte) bool) (time.Duration, error) {
	for {
		epoch, batch, err := leaseRow(ctx, c)
		if err == nil && cond(epoch, batch) {
			return time.Since(since), nil
		}
		if time.Since(since) > limit {
			return limit, fmt.Errorf("no progress %v after the stall (last read: epoch %d, err %v)", limit, epoch, err)
		}
		select {
		case <-ctx.Done():
			return limit, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func startNode(t *testing.T, c *Cluster, id, dsn string) *Proc {
	t.Helper()
	pr, err := c.Start(id, dsn)
	if err != nil {
		t.Fatal(err)
	}
	return pr
}

func waitFault(t *testing.T, at <-chan time.Time, what string) time.Time {
	t.Helper()
	select {
	case ts := <-at:
		return ts
	case <-time.After(30 * time.Second):
		t.Fatalf("the fault never fired: no %s", what)
		return time.Time{}
	}
}

// stallCoordinator: n1, behind the proxy, is coordinator; a new task list makes it
// apply a batch, and it stalls right after locking the lease row.
func stallCoordinator(t *testing.T, ctx context.Context, c *Cluster, f fault) time.Duration {
	proxy, proxied := startProxy(t, c.DSN)
	n1 := startNode(t, c, "n1", proxied)
	mustPoll(t, ctx, c, "n1 coordinating", 20*time.Second, func(cs helix.ClusterStatus) (bool, string) {
		return cs.Coordinator.Held && strings.HasPrefix(cs.Coordinator.Owner, "n1"), fmt.Sprintf("coordinator %+v", cs.Coordinator)
	})
	startNode(t, c, "n2", "")
	startNode(t, c, "n3", "")
	mustPoll(t, ctx, c, "balance over 3 nodes", 30*time.Second, func(cs helix.ClusterStatus) (bool, string) {
		return Balanced(cs, []string{"n1", "n2", "n3"})
	})
	at := stall(t, proxy, n1, f, "FROM helix_leases", "FOR UPDATE")
	if _, err := c.Helix(ctx, "tasklist", "put", "--domain", "e2e", "beta", "8"); err != nil {
		t.Fatal(err)
	}
	t0 := waitFault(t, at, "locking read of the lease row by the coordinator")
	e0, b0, err := leaseRow(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	limit := c.Profile.LeaseTTL + 10*time.Second
	elected, err := waitProgress(ctx, c, t0, limit, func(e uint64, _ []byte) bool { return e > e0 })
	if err != nil {
		t.Fatalf("new coordinator: %v", err)
	}
	wrote, err := waitProgress(ctx, c, t0, limit, func(e uint64, b []byte) bool { return e > e0 && !bytes.Equal(b, b0) })
	if err != nil {
		t.Fatalf("new coordinator's first batch: %v", err)
	}
	t.Logf("coordinator n1 stalled holding the lease row: new coordinator after %v, its first batch committed after %v",
		elected.Round(time.Millisecond), wrote.Round(time.Millisecond))
	// And the cluster settles without n1.
	mustPoll(t, ctx, c, "balance over n2, n3", 30*time.Second, func(cs helix.ClusterStatus) (bool, string) {
		return Balanced(cs, []string{"n2", "n3"})
	})
	t.Logf("... every partition on n2, n3 and balanced %v after the stall (n1 declared dead after %v)", time.Since(t0).Round(time.Millisecond), c.Profile.DeadAfter)
	return wrote
}

// stallWorker: n2, behind the proxy, is a worker; n3 joins, the coordinator releases
// some of n2's partitions, and n2 stalls right after its release ack locked the revision
// row.
func stallWorker(t *testing.T, ctx context.Context, c *Cluster, f fault) time.Duration {
	proxy, proxied := startProxy(t, c.DSN)
	startNode(t, c, "n1", "")
	mustPoll(t, ctx, c, "n1 coordinating", 20*time.Second, func(cs helix.ClusterStatus) (bool, string) {
		return cs.Coordinator.Held, fmt.Sprintf("coordinator %+v", cs.Coordinator)
	})
	n2 := startNode(t, c, "n2", proxied)
	mustPoll(t, ctx, c, "balance over 2 nodes", 30*time.Second, func(cs helix.ClusterStatus) (bool, string) {
		return Balanced(cs, []string{"n1", "n2"})
	})
	at := stall(t, proxy, n2, f, "FROM helix_revision", "FOR UPDATE")
	startNode(t, c, "n3", "")
	t0 := waitFault(t, at, "release ack by the worker")
	_, b0, err := leaseRow(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	// Another writer of the revision row: an admin adding a task list.
	var putTook time.Duration
	var putErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, putErr = c.Helix(ctx, "tasklist", "put", "--domain", "e2e", "gamma", "4")
		putTook = time.Since(t0)
	}()
	limit := c.Profile.LeaseTTL + 10*time.Second
	wrote, err := waitProgress(ctx, c, t0, limit, func(_ uint64, b []byte) bool { return !bytes.Equal(b, b0) })
	wg.Wait()
	if err != nil {
		t.Fatalf("coordinator's next batch: %v", err)
	}
	if putErr != nil {
		t.Fatalf("tasklist put during the stall: %v", putErr)
	}
	t.Logf("worker n2 stalled holding the revision row: coordinator's next batch committed after %v, an admin's tasklist put finished after %v",
		wrote.Round(time.Millisecond), putTook.Round(time.Millisecond))
	mustPoll(t, ctx, c, "all partitions on n1, n3", 30*time.Second, func(cs helix.ClusterStatus) (bool, string) {
		return Balanced(cs, []string{"n1", "n3"})
	})
	t.Logf("... every partition on n1, n3 and balanced %v after the stall (n2 declared dead after %v)", time.Since(t0).Round(time.Millisecond), c.Profile.DeadAfter)
	return max(wrote, putTook)
}
