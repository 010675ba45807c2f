package sim

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
)

// small is a 5-node scenario with one fault of each common kind, for the tests here.
func small() *Scenario {
	sc := base("small", 70)
	sc.Expect = Expect{ConvergeWithin: sec(30), CoordinatorWithin: sec(8)}
	sc.Timeline = []Action{
		{At: sec(10), Do: DoCrash, Target: "coordinator", For: sec(8)},
		{At: sec(20), Do: DoPause, Target: "worker", For: sec(7)},
		{At: sec(25), Do: DoPartition, Target: "worker", For: sec(6), Buffer: true},
		{At: sec(30), Do: DoLoss, For: sec(5), RequestLoss: 0.1, ReplyLoss: 0.1},
		{At: sec(33), Do: DoDrain, Target: "n2"},
		{At: sec(36), Do: DoUndrain, Target: "n2"},
	}
	return sc
}

func TestSmallScenarioPasses(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		r, err := Run(small(), Options{Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		if r.Violation != nil {
			t.Fatalf("seed %d:\n%s", seed, r.Violation)
		}
		if !r.Passed || r.Converged < 0 {
			t.Fatalf("seed %d: passed %v converged %v", seed, r.Passed, r.Converged)
		}
		if len(r.CoordinatorFailovers) == 0 || r.CoordinatorFailovers[0] > 8*time.Second {
			t.Fatalf("seed %d: coordinator failovers %v", seed, r.CoordinatorFailovers)
		}
		for _, k := range []string{"action_crash", "action_pause", "action_partition", "request_lost", "leader_change", "nodes_declared_dead"} {
			if r.Coverage[k] == 0 {
				t.Errorf("seed %d: coverage %q never reached: %v", seed, k, r.Coverage)
			}
		}
	}
}

// TestSameSeedSameTrace: the trace depends on the scenario and seed only, not on
// GOMAXPROCS or on what else runs in the process at the same time.
func TestSameSeedSameTrace(t *testing.T) {
	ref, err := Run(small(), Options{Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Run(small(), Options{Seed: 8})
	if other.Trace == ref.Trace {
		t.Fatal("different seeds gave the same trace: the hash sees nothing")
	}
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	for _, procs := range []int{1, 2, 4} {
		runtime.GOMAXPROCS(procs)
		var wg sync.WaitGroup
		traces := make([]string, 4)
		for i := range traces {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := Run(small(), Options{Seed: 7})
				if err != nil {
					t.Error(err)
					return
				}
				traces[i] = r.Trace
			}()
		}
		wg.Wait()
		for i, tr := range traces {
			if tr != ref.Trace {
				t.Fatalf("GOMAXPROCS=%d run %d: trace %s, want %s", procs, i, tr, ref.Trace)
			}
		}
	}
}

func TestCheckDeterminism(t *testing.T) {
	d, err := CheckDeterminism(small(), Options{Seed: 3}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Identical || d.EventsRunA == 0 {
		t.Fatalf("not identical: %s", d)
	}
	// A correct engine does not care in which order the store lists rows.
	d, err = CheckDeterminism(small(), Options{Seed: 3, ForceShuffle: true}, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Identical {
		t.Fatalf("shuffled listings changed the run:\n%s", d)
	}
}

func TestViolationReport(t *testing.T) {
	sc := base("report", 40)
	sc.Timeline = []Action{{At: sec(10), Do: DoPartition, Target: "worker", For: sec(10)}}
	sc.Expect = Expect{NoLiveness: true, Violation: "S3"}
	// A clock running at half speed on every node makes the cut-off worker keep
	// processing past the point where its partitions move.
	sc.Nodes[0].Drift = -0.5
	r, err := Run(sc, Options{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	v := r.Violation
	if v == nil || v.Invariant != "S3" || !v.Expected || !r.Passed {
		t.Fatalf("want an expected S3 violation, got %+v", v)
	}
	out := v.String()
	for _, want := range []string{"EXPECTED VIOLATION S3", "seed 1", fmt.Sprintf("event #%d", v.Event), "last 30 events", "replay: helix sim run --scenario report --seed 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if len(v.Recent) != 30 {
		t.Errorf("want the last 30 events, have %d", len(v.Recent))
	}
	// The run stopped at the violation.
	if r.Virtual >= sc.Duration.D() {
		t.Errorf("run went on to %v after the violation at %v", r.Virtual, v.At)
	}
}

func TestScenarioValidation(t *testing.T) {
	bad := []func(*Scenario){
		func(s *Scenario) { s.Name = "" },
		func(s *Scenario) { s.Nodes = nil },
		func(s *Scenario) { s.Timeline = []Action{{At: sec(1), Do: "nope"}} },
		func(s *Scenario) { s.Timeline = []Action{{At: sec(1), Do: DoPause, Target: "n1"}} },
		func(s *Scenario) { s.Timeline = []Action{{At: sec(1), Do: DoCrash, Target: "n1", Hold: "apply"}} },
		func(s *Scenario) { s.Config.DeadAfter = sec(1) },
		func(s *Scenario) { s.Network.ReplyLoss = 2 },
		func(s *Scenario) { s.Expect.Violation = "S7" },
	}
	for i, f := range bad {
		sc := base("v", 10)
		f(sc)
		err := sc.Validate()
		if err == nil || !errors.Is(err, engine.ErrInvalid) {
			t.Errorf("case %d: want a validation error wrapping ErrInvalid, got %v", i, err)
		}
	}
}

// TestTimelineHTML: the page is well-formed XML and shows the coordinator lane with
// epochs, a row per node, the faults and the violation.
func TestTimelineHTML(t *testing.T) {
	sc := small()
	sc.Expect.Violation = ""
	r, err := Run(sc, Options{Seed: 2, Timeline: true})
	if err != nil {
		t.Fatal(err)
	}
	tl := r.Timeline
	tl.Violations = append(tl.Violations, Mark{At: 30 * time.Second, Invariant: "S3", Message: "a <test> mark & more"})
	var buf bytes.Buffer
	if err := tl.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	dec := xml.NewDecoder(strings.NewReader(page))
	dec.Strict = true
	classes := map[string]int{}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			for _, a := range se.Attr {
				if a.Name.Local == "class" {
					classes[a.Value]++
				}
			}
		}
	}
	for _, c := range []string{"coordinator", "coord", "faults", "fault", "node-row", "violation"} {
		if classes[c] == 0 {
			t.Errorf("no element of class %q (have %v)", c, classes)
		}
	}
	if classes["node-row"] != len(tl.Nodes) {
		t.Errorf("%d node rows for %d nodes", classes["node-row"], len(tl.Nodes))
	}
	for _, want := range []string{"<svg", " e1<", "crash", "pause", "partition", "a &lt;test&gt; mark &amp; more"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "http://") && !strings.Contains(page, "http://www.w3.org/2000/svg") {
		t.Error("the page must be self-contained")
	}
}

func TestSwarmDrawsPerSeed(t *testing.T) {
	sc := base("swarm", 60)
	sc.Swarm = &Swarm{Until: sec(40)}
	sc.Expect = Expect{ConvergeWithin: sec(40)}
	kinds := map[string]bool{}
	for seed := uint64(1); seed <= 12; seed++ {
		r, err := Run(sc, Options{Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		if r.Violation != nil {
			t.Fatalf("seed %d:\n%s", seed, r.Violation)
		}
		for k := range r.Coverage {
			if strings.HasPrefix(k, "swarm_kinds_on=") {
				kinds[k] = true
			}
		}
	}
	if len(kinds) < 6 {
		t.Errorf("12 seeds drew only %d distinct fault mixes: %v", len(kinds), kinds)
	}
}

// TestSwarmWithoutTaskLists: a swarm over a cluster that starts with no task list draws
// put_tasklist faults that create one (it used to index the empty list and panic).
func TestSwarmWithoutTaskLists(t *testing.T) {
	sc := base("swarm-empty", 30)
	sc.TaskLists = nil
	sc.Swarm = &Swarm{Until: sec(20), Kinds: []string{DoPutTaskList}, MinInterval: sec(1), MaxInterval: sec(2)}
	drawn := 0
	for seed := uint64(1); seed <= 4; seed++ {
		r, err := Run(sc, Options{Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		if r.Violation != nil {
			t.Fatalf("seed %d:\n%s", seed, r.Violation)
		}
		drawn += r.Coverage["action_"+DoPutTaskList]
	}
	if drawn == 0 {
		t.Fatal("4 seeds drew no put_tasklist")
	}
}

// TestSummaryPercentiles: the summary's running percentiles equal Percentile over every
// failover added so far, whatever order the seeds report them in.
func TestSummaryPercentiles(t *testing.T) {
	var sum Summary
	var all []time.Duration
	for i := 0; i < 50; i++ {
		r := &Result{Scenario: "p", Seed: uint64(i)}
		for j := 0; j < i%7; j++ {
			r.CoordinatorFailovers = append(r.CoordinatorFailovers, time.Duration((i*37+j*11)%23)*time.Second)
		}
		sum.Add(r)
		all = append(all, r.CoordinatorFailovers...)
		if sum.CoordP50 != Percentile(all, 50) || sum.CoordP99 != Percentile(all, 99) || sum.CoordMax != Percentile(all, 100) {
			t.Fatalf("after %d results: p50/p99/max %v/%v/%v, want %v/%v/%v", i+1, sum.CoordP50, sum.CoordP99, sum.CoordMax,
				Percentile(all, 50), Percentile(all, 99), Percentile(all, 100))
		}
	}
	if sum.WorkerP50 != 0 || sum.WorkerMax != 0 {
		t.Fatalf("no worker failovers, yet p50 %v max %v", sum.WorkerP50, sum.WorkerMax)
	}
}

// TestTimelineRendersInChromium renders the page with headless Chromium when one is
// installed (apt-get install chromium-headless-shell) and checks a real image came out.
func TestTimelineRendersInChromium(t *testing.T) {
	var bin string
	for _, b := range []string{"chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(b); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("no headless Chromium installed")
	}
	r, err := Run(small(), Options{Seed: 1, Timeline: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	page, png := filepath.Join(dir, "t.html"), filepath.Join(dir, "t.png")
	f, err := os.Create(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Timeline.WriteHTML(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,600", "--screenshot="+png, "file://"+page)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, out)
	}
	b, err := os.ReadFile(png)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 5000 || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("screenshot is not a rendered PNG (%d bytes)", len(b))
	}
}
