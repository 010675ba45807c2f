package e2e

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

// TestExecChildrenNeverOverlap runs `helix node --exec` with the Python example worker
// (examples/exec/worker.py) on four nodes, fast profile, and puts them through a SIGKILL,
// a SIGSTOP longer than dead-after and a cut from the database. The workers of odd
// partitions are rogue: they ignore the deadline and SIGTERM, so only helix's guard
// stops them. Every worker logs each unit of work with CLOCK_MONOTONIC stamps; at the
// end, no two workers may ever have processed one partition at once.
func TestExecChildrenNeverOverlap(t *testing.T) {
	dsn := mysqltest.DSN(t)
	if _, err := os.Stat("/usr/bin/env"); err != nil || runtime.GOOS != "linux" {
		t.Skip("--exec needs Linux")
	}
	python, err := lookPython()
	if err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	worker, err := filepath.Abs("../examples/exec/worker.py")
	if err != nil {
		t.Fatal(err)
	}
	units := filepath.Join(dir, "units.log")
	p := Fast
	c := migratedCluster(t, ctx, dsn, dir, p, map[string]int{"jobs": 8})
	defer func() {
		_ = c.Shutdown(15 * time.Second)
		if t.Failed() {
			for _, pr := range c.Procs() {
				t.Logf("log of %s: %s", pr.ID, pr.LogPath)
			}
			t.Logf("units: %s", units)
		}
	}()
	proxy, proxied := startProxy(t, dsn)
	execArgs := []string{"--exec", fmt.Sprintf("%s %s --unit 0.05 --rogue --log %s", python, worker, units), "--exec-grace", "1s"}
	procs := map[string]*Proc{}
	start := func(id, d string) {
		t.Helper()
		pr, err := c.Start(id, d, execArgs...)
		if err != nil {
			t.Fatal(err)
		}
		procs[id] = pr
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		start(id, "")
	}
	mustPoll(t, ctx, c, "a coordinator", 20*time.Second, func(cs helix.ClusterStatus) (bool, string) {
		return cs.Coordinator.Held, "no coordinator"
	})
	start("n4", proxied)
	live := []string{"n1", "n2", "n3", "n4"}
	mustPoll(t, ctx, c, "balance over 4 nodes", 30*time.Second, func(cs helix.ClusterStatus) (bool, string) { return Balanced(cs, live) })
	time.Sleep(time.Second) // let the children work a little (wall time: real processes)
	cs, _ := c.Status(ctx)
	var workers []string // direct nodes that do not coordinate
	for _, id := range []string{"n1", "n2", "n3"} {
		if id != cs.Coordinator.Owner {
			workers = append(workers, id)
		}
	}

	// 1. kill -9: the guards see their control pipe close and kill the children at once.
	if err := procs[workers[0]].Kill(); err != nil {
		t.Fatal(err)
	}
	live = without(live, workers[0])
	mustPoll(t, ctx, c, "balance after SIGKILL", 20*time.Second, func(cs helix.ClusterStatus) (bool, string) { return Balanced(cs, live) })

	// 2. SIGSTOP longer than dead-after: the frozen node's guards kill its children
	//    before its liveness deadline; the partitions run elsewhere; SIGCONT brings it
	//    back (re-registered) and its children are started afresh.
	frozen := procs[workers[1]]
	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	live = without(live, workers[1])
	mustPoll(t, ctx, c, "balance while a node is frozen", 20*time.Second, func(cs helix.ClusterStatus) (bool, string) { return Balanced(cs, live) })
	time.Sleep(time.Second)
	if err := frozen.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	live = append(live, workers[1])
	mustPoll(t, ctx, c, "balance after SIGCONT", 30*time.Second, func(cs helix.ClusterStatus) (bool, string) { return Balanced(cs, live) })

	// 3. Cut n4 from the database: its deadline stops moving and the guards kill its
	//    children in time; heal it.
	proxy.Cut()
	live = without(live, "n4")
	mustPoll(t, ctx, c, "balance while n4 is cut off", 20*time.Second, func(cs helix.ClusterStatus) (bool, string) { return Balanced(cs, live) })
	time.Sleep(time.Second)
	proxy.Heal()
	live = append(live, "n4")
	mustPoll(t, ctx, c, "balance after healing n4", 30*time.Second, func(cs helix.ClusterStatus) (bool, string) { return Balanced(cs, live) })
	time.Sleep(time.Second)

	if err := c.Shutdown(20 * time.Second); err != nil {
		t.Errorf("SIGTERM of all nodes: %v", err)
	}
	ivs, err := readUnits(units)
	if err != nil {
		t.Fatal(err)
	}
	parts := map[string]bool{}
	for _, iv := range ivs {
		parts[iv.part] = true
	}
	if len(parts) != 8 {
		t.Errorf("units logged for %d partitions, want all 8", len(parts))
	}
	for _, bad := range unitOverlaps(ivs) {
		t.Error(bad)
	}
	t.Logf("checked %d units of work of %d partitions for overlap", len(ivs), len(parts))
	checkNoChildLeft(t, worker)
}

func lookPython() (string, error) {
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("no python3: the --exec end-to-end test runs the Python example worker")
}

// unit is one unit of work of one worker process: [begin, end] on CLOCK_MONOTONIC. A
// unit without an end line was killed: it ended no later than begin + its length (the
// worker sleeps that long) plus scheduling slack.
type unit struct {
	part       string
	gen        int
	pid        int
	begin, end int64
	killed     bool
}

const unitSlack = int64(100 * time.Millisecond)

func readUnits(path string) ([]unit, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []unit
	open := map[int]int{} // pid → index of its unit without an end yet
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		num := func(i int) int64 { v, _ := strconv.ParseInt(fs[i], 10, 64); return v }
		switch {
		case len(fs) == 6 && fs[0] == "begin":
			pid := int(num(3))
			out = append(out, unit{part: fs[1], gen: int(num(2)), pid: pid, begin: num(4), end: num(4) + num(5) + unitSlack, killed: true})
			open[pid] = len(out) - 1
		case len(fs) == 5 && fs[0] == "end":
			pid := int(num(3))
			if i, ok := open[pid]; ok {
				out[i].end, out[i].killed = num(4), false
				delete(open, pid)
			}
		default:
			return nil, fmt.Errorf("%s: malformed line %q", path, sc.Text())
		}
	}
	return out, sc.Err()
}

// unitOverlaps lists every pair of units of one partition by different workers that
// overlap in time.
func unitOverlaps(us []unit) []string {
	by := map[string][]unit{}
	for _, u := range us {
		by[u.part] = append(by[u.part], u)
	}
	var bad []string
	for _, part := range slices.Sorted(maps.Keys(by)) {
		l := by[part]
		slices.SortFunc(l, func(a, b unit) int { return int(a.begin - b.begin) })
		maxEnd, owner := int64(0), unit{}
		for _, u := range l {
			if u.pid != owner.pid && u.begin < maxEnd {
				bad = append(bad, fmt.Sprintf("%s: worker %d (generation %d) began a unit %v before worker %d (generation %d) had ended one",
					part, u.pid, u.gen, time.Duration(maxEnd-u.begin), owner.pid, owner.gen))
			}
			if u.end > maxEnd {
				maxEnd, owner = u.end, u
			}
		}
	}
	return bad
}

// checkNoChildLeft fails if a worker process outlived every node.
func checkNoChildLeft(t *testing.T, worker string) {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), worker) && strings.Contains(string(b), "--rogue") {
			t.Errorf("worker process %d outlived the nodes: %q", pid, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}
