package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/e2e"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

// Failover on real MariaDB / MySQL, wall clock, with real `helix node` processes (four
// nodes, one task list of 64 partitions), for each timing profile:
//
//   - coord-s: SIGKILL the coordinator → another node logs became_coordinator.
//   - worker-s: SIGKILL a worker → the last of its partitions has started elsewhere
//     (from the nodes' partition_start log lines).
//   - gap-s: SIGTERM a worker → per partition, from its stop on the old node to its
//     start on the new one: how long each partition was unprocessed in a graceful
//     handoff (pooled over all partitions of all runs).
//   - exit-s: SIGTERM → the process has exited.
//
// p50 and p99 over HELIX_BENCH_RUNS runs (default 10) each; between runs the victim is
// restarted and the cluster rebalanced. Targets with the default timings: worker and
// coordinator failover ≤ 7 s, graceful handoff ≤ 1 s per partition.
//
// Opt-in (minutes of wall clock, five processes): HELIX_BENCH_FAILOVER=1 and
// HELIX_TEST_MYSQL_DSN='root@tcp(127.0.0.1:3306)/'. HELIX_BENCH_PROFILES picks the
// profiles (default "fast,default").
//
//	HELIX_BENCH_FAILOVER=1 HELIX_TEST_MYSQL_DSN='root@tcp(127.0.0.1:3306)/' \
//	  go test -run '^$' -bench Failover -benchtime 1x -timeout 30m ./bench/

var buildOnce struct {
	sync.Once
	bin string
	err error
}

func BenchmarkFailover(b *testing.B) {
	if os.Getenv("HELIX_BENCH_FAILOVER") != "1" {
		b.Skip("failover benchmarks need HELIX_BENCH_FAILOVER=1 and HELIX_TEST_MYSQL_DSN (real processes on MySQL, minutes)")
	}
	if os.Getenv(mysqltest.EnvDSN) == "" {
		b.Skipf("failover benchmarks need %s, e.g. 'root@tcp(127.0.0.1:3306)/'", mysqltest.EnvDSN)
	}
	runs := 10
	if s := os.Getenv("HELIX_BENCH_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("HELIX_BENCH_RUNS=%q: must be a positive integer", s)
		}
		runs = n
	}
	profiles := "fast,default"
	if s := os.Getenv("HELIX_BENCH_PROFILES"); s != "" {
		profiles = s
	}
	for _, name := range strings.Split(profiles, ",") {
		var p e2e.Profile
		switch name {
		case "fast":
			p = e2e.Fast
		case "default":
			p = e2e.Default
		default:
			b.Fatalf("HELIX_BENCH_PROFILES: unknown profile %q (fast, default)", name)
		}
		b.Run(name, func(b *testing.B) { benchFailover(b, p, runs) })
	}
}

func benchFailover(b *testing.B, p e2e.Profile, runs int) {
	ctx := context.Background()
	dsn := mysqltest.DSN(b)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "helix-bench-bin")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.bin, buildOnce.err = e2e.Build(dir)
	})
	if buildOnce.err != nil {
		b.Fatal(buildOnce.err)
	}
	dir := b.TempDir()
	c := &e2e.Cluster{Bin: buildOnce.bin, DSN: dsn, Dir: dir, Profile: p}
	if _, err := c.Helix(ctx, "migrate"); err != nil {
		b.Fatal(err)
	}
	c, err := e2e.NewCluster(ctx, buildOnce.bin, dsn, dir, p)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Shutdown(30 * time.Second)
	if _, err := c.Helix(ctx, "tasklist", "put", "--domain", "bench", "t", "64"); err != nil {
		b.Fatal(err)
	}
	ids := []string{"n1", "n2", "n3", "n4"}
	procs := map[string]*e2e.Proc{}
	start := func(id string) {
		pr, err := c.Start(id, "")
		if err != nil {
			b.Fatal(err)
		}
		procs[id] = pr
	}
	// settle waits until the store shows the partitions balanced over all four nodes
	// and every node's log agrees (a node learns of a new assignment on its next
	// heartbeat, after the store has it).
	settle := func() {
		if _, err := e2e.Poll(ctx, 60*time.Second, func(cs helix.ClusterStatus) (bool, string) {
			if ok, why := e2e.Balanced(cs, ids); !ok {
				return false, why
			}
			for _, n := range cs.Nodes {
				if got := len(running(b, procs[n.ID])); got != n.Total {
					return false, fmt.Sprintf("%s logs %d partitions running, the store says %d", n.ID, got, n.Total)
				}
			}
			return true, ""
		}, c.Status); err != nil {
			b.Fatalf("cluster did not settle: %v", err)
		}
	}
	for _, id := range ids {
		start(id)
	}
	settle()
	others := func(victim string) []string {
		var out []string
		for _, id := range ids {
			if id != victim {
				out = append(out, id)
			}
		}
		return out
	}
	waitLive := func(live []string) {
		if _, err := e2e.Poll(ctx, 60*time.Second, func(cs helix.ClusterStatus) (bool, string) {
			return e2e.Balanced(cs, live)
		}, c.Status); err != nil {
			b.Fatalf("partitions did not settle on %v: %v", live, err)
		}
	}
	coordinator := func() string {
		cs, err := c.Status(ctx)
		if err != nil || !cs.Coordinator.Held {
			b.Fatalf("no coordinator: %v", err)
		}
		return cs.Coordinator.Owner
	}
	worker := func(run int) string {
		coord := coordinator()
		cand := others(coord)
		return cand[run%len(cand)]
	}

	b.ResetTimer()
	var coordTimes, workerTimes, gaps, exits []time.Duration

	// Coordinator crash.
	for run := range runs {
		victim := coordinator()
		killAt := time.Now()
		if err := procs[victim].Kill(); err != nil {
			b.Fatal(err)
		}
		waitLive(others(victim))
		first := time.Time{}
		for _, id := range others(victim) {
			ts, err := e2e.EventTimes(procs[id], "became_coordinator")
			if err != nil {
				b.Fatal(err)
			}
			for _, t := range ts {
				if t.After(killAt) && (first.IsZero() || t.Before(first)) {
					first = t
				}
			}
		}
		if first.IsZero() {
			b.Fatalf("run %d: nobody logged became_coordinator after %s was killed", run, victim)
		}
		coordTimes = append(coordTimes, first.Sub(killAt))
		start(victim)
		settle()
	}

	// Worker crash.
	for run := range runs {
		victim := worker(run)
		owned := openPartitions(b, procs[victim])
		killAt := time.Now()
		if err := procs[victim].Kill(); err != nil {
			b.Fatal(err)
		}
		waitLive(others(victim))
		var worst time.Duration
		for _, at := range startsAfter(b, c, owned, victim, killAt) {
			worst = max(worst, at.Sub(killAt))
		}
		workerTimes = append(workerTimes, worst)
		start(victim)
		settle()
	}

	// Graceful handoff (SIGTERM).
	for run := range runs {
		victim := worker(run)
		pr := procs[victim]
		termAt := time.Now()
		if err := pr.Term(); err != nil {
			b.Fatal(err)
		}
		if err := pr.Wait(60 * time.Second); err != nil {
			b.Fatalf("run %d: SIGTERM %s: %v", run, victim, err)
		}
		exits = append(exits, pr.Exited.Sub(termAt))
		waitLive(others(victim))
		mine, err := e2e.Intervals([]*e2e.Proc{pr})
		if err != nil {
			b.Fatal(err)
		}
		stopped := map[string]time.Time{}
		for _, iv := range mine {
			if !iv.End.Before(termAt) {
				stopped[iv.Partition] = iv.End
			}
		}
		for part, at := range startsAfter(b, c, stopped, victim, termAt) {
			gaps = append(gaps, at.Sub(stopped[part]))
		}
		start(victim)
		settle()
	}
	b.StopTimer()

	report := func(name string, ds []time.Duration) {
		p50, p99 := pct(ds, 0.50), pct(ds, 0.99)
		b.ReportMetric(p50.Seconds(), name+"-p50-s")
		b.ReportMetric(p99.Seconds(), name+"-p99-s")
		b.Logf("%s %-7s n=%-4d p50 %-8v p99 %-8v max %v", p.Name, name, len(ds), p50.Round(time.Millisecond), p99.Round(time.Millisecond), slices.Max(ds).Round(time.Millisecond))
	}
	report("coord", coordTimes)
	report("worker", workerTimes)
	report("gap", gaps)
	report("exit", exits)
}

// running returns the partitions a process's log shows it processing now.
func running(b *testing.B, p *e2e.Proc) map[string]bool {
	ivs, err := e2e.Intervals([]*e2e.Proc{p})
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]bool{}
	for _, iv := range ivs {
		if iv.Reason == "running" {
			out[iv.Partition] = true
		}
	}
	return out
}

// startsAfter waits (bounded) until every partition of parts has been logged starting
// on a process other than the victim's after t, and returns when each first did.
func startsAfter[V any](b *testing.B, c *e2e.Cluster, parts map[string]V, victim string, t time.Time) map[string]time.Time {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ivs, err := e2e.Intervals(c.Procs())
		if err != nil {
			b.Fatal(err)
		}
		first := map[string]time.Time{}
		for _, iv := range ivs {
			if _, ok := parts[iv.Partition]; !ok || !iv.Start.After(t) || strings.HasPrefix(iv.Proc, victim+".") {
				continue
			}
			if at, ok := first[iv.Partition]; !ok || iv.Start.Before(at) {
				first[iv.Partition] = iv.Start
			}
		}
		if len(first) == len(parts) {
			return first
		}
		if time.Now().After(deadline) {
			b.Fatalf("after 30s only %d of %d partitions of %s were logged starting elsewhere", len(first), len(parts), victim)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openPartitions returns the partitions a running process is processing, from its log;
// it fails the benchmark if there are none.
func openPartitions(b *testing.B, p *e2e.Proc) map[string]bool {
	out := running(b, p)
	if len(out) == 0 {
		b.Fatalf("%s processes nothing", p.ID)
	}
	return out
}

// pct is the q-quantile (nearest rank).
func pct(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
