package scenarios

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/helixcoord/helix/sim"
)

// traceChildEnv makes the test binary, re-executed by TestTracesAcrossGOMAXPROCS, print
// the traces of every built-in scenario instead of testing.
const traceChildEnv = "HELIX_SCENARIO_TRACE_CHILD"

// traces runs seed 1 of every built-in scenario, with the store's list replies
// shuffled, and returns one "name trace" line each.
func traces(t *testing.T) string {
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, sc := range all {
		r, err := sim.Run(sc, sim.Options{Seed: 1, ForceShuffle: true, ShuffleSeed: 9})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s\n", sc.Name, r.Trace)
	}
	return b.String()
}

// TestTraceChild is the child half of TestTracesAcrossGOMAXPROCS.
func TestTraceChild(t *testing.T) {
	if os.Getenv(traceChildEnv) == "" {
		t.Skip("runs only as the child of TestTracesAcrossGOMAXPROCS")
	}
	fmt.Print("TRACES\n" + traces(t) + "END\n")
}

// TestTracesAcrossGOMAXPROCS: the same seed gives the same trace in separate processes
// at GOMAXPROCS 1 and 4 (and in this one): nothing in a run depends on scheduling, map
// iteration order or memory layout, which differ between processes.
func TestTracesAcrossGOMAXPROCS(t *testing.T) {
	if testing.Short() {
		t.Skip("re-runs every scenario in two child processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := func(procs int) string {
		cmd := exec.Command(exe, "-test.run=^TestTraceChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), traceChildEnv+"=1", fmt.Sprintf("GOMAXPROCS=%d", procs))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child at GOMAXPROCS=%d: %v\n%s", procs, err, out)
		}
		s := string(out)
		i, j := strings.Index(s, "TRACES\n"), strings.Index(s, "END\n")
		if i < 0 || j < i {
			t.Fatalf("child at GOMAXPROCS=%d printed no traces:\n%s", procs, out)
		}
		return s[i+len("TRACES\n") : j]
	}
	one, four := child(1), child(4)
	here := traces(t)
	if one != four || one != here {
		t.Fatalf("traces differ:\nGOMAXPROCS=1:\n%s\nGOMAXPROCS=4:\n%s\nthis process:\n%s", one, four, here)
	}
	if n := strings.Count(one, "\n"); n != len(Names()) {
		t.Fatalf("%d traces for %d scenarios", n, len(Names()))
	}
}
