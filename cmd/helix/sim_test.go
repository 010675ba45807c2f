package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/helixcoord/helix/scenarios"
)

func runSimCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	code = run(context.Background(), e, append([]string{"sim"}, args...))
	return code, out.String(), errb.String()
}

func TestSimList(t *testing.T) {
	code, out, _ := runSimCmd(t, "list")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(scenarios.Names()) {
		t.Fatalf("%d lines for %d scenarios:\n%s", len(lines), len(scenarios.Names()), out)
	}
	for i, n := range scenarios.Names() {
		if !strings.HasPrefix(lines[i], n+" ") {
			t.Errorf("line %d %q does not start with %s", i, lines[i], n)
		}
	}
	if !strings.Contains(out, "clock-drift-beyond-bound") || !strings.Contains(out, "[expects S3]") {
		t.Errorf("list must show the expected violation:\n%s", out)
	}
}

func TestSimRunSummary(t *testing.T) {
	code, out, stderr := runSimCmd(t, "run", "--scenario", "coordinator-crash", "--seeds", "3")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{"scenario", "seeds", "violations", "coord failover p50/p99/max", "worker failover p50/p99/max", "moved", "sim-s/wall-s", "coordinator-crash", " ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestSimRunJSONAndExpectedViolation(t *testing.T) {
	code, out, stderr := runSimCmd(t, "run", "--scenario", "clock-drift-beyond-bound", "--scenario", "cold-start", "--seeds", "2", "--json")
	if code != 0 {
		t.Fatalf("an expected violation must not fail the run: exit %d\n%s\n%s", code, out, stderr)
	}
	var sums []struct {
		Scenario   string `json:"scenario"`
		Seeds      int    `json:"seeds"`
		Violations int    `json:"violations"`
		Expected   int    `json:"expected_violations"`
		Failed     int    `json:"failed"`
	}
	// Expected violations are printed before the JSON only for single seeds; with two
	// seeds stdout is the JSON alone.
	if err := json.Unmarshal([]byte(out), &sums); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(sums) != 2 || sums[0].Scenario != "clock-drift-beyond-bound" || sums[0].Expected != 2 || sums[0].Failed != 0 || sums[1].Seeds != 2 || sums[1].Violations != 0 {
		t.Fatalf("unexpected summaries: %+v", sums)
	}
}

func TestSimRunSingleSeedShowsViolationAndReplay(t *testing.T) {
	code, out, _ := runSimCmd(t, "run", "--scenario", "clock-drift-beyond-bound", "--seed", "4")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	for _, want := range []string{"EXPECTED VIOLATION S3", "seed 4", "last 30 events", "replay: helix sim run --scenario clock-drift-beyond-bound --seed 4"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestSimRunFailureExitsNonZero(t *testing.T) {
	// A custom scenario that expects a violation a healthy cluster never has.
	dir := t.TempDir()
	f := filepath.Join(dir, "wrong.json")
	if err := os.WriteFile(f, []byte(`{"name":"wrong","description":"expects S1 from a quiet cluster","duration":"20s",
	  "nodes":[{"prefix":"n","count":3}],"tasklists":[{"domain":"d","name":"t","partitions":6}],
	  "expect":{"violation":"S1","no_liveness":true}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runSimCmd(t, "run", "--scenario", f, "--seed", "1")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	// The replay command names the scenario as it was given: the file's path.
	if !strings.Contains(out, "MISSING EXPECTED VIOLATION S1") || !strings.Contains(out, "FAIL") || !strings.Contains(out, "replay: helix sim run --scenario "+f+" --seed 1") {
		t.Errorf("output:\n%s", out)
	}
}

func TestSimRunTimelineAndDeterminism(t *testing.T) {
	html := filepath.Join(t.TempDir(), "t.html")
	code, out, stderr := runSimCmd(t, "run", "--scenario", "coordinator-pause", "--seed", "2", "--timeline", html, "--check-determinism", "--shuffle")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(out, "deterministic: coordinator-pause seed 2 ran twice with identical traces") {
		t.Errorf("no determinism verdict:\n%s", out)
	}
	b, err := os.ReadFile(html)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", `class="coordinator"`, `class="node-row"`, `class="fault"`, "pause"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("timeline lacks %q", want)
		}
	}
}

func TestSimBadUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"run", "--seeds", "0"},
		{"run", "--seed", "1", "--seeds", "2"},
		{"run", "--no-such-flag"},
		{"run", "--scenario", "no-such-scenario"},
		{"run", "--timeline", "x.html"},
		{"run", "--shuffle"},
		{"list", "extra"},
	} {
		if code, _, _ := runSimCmd(t, args...); code != 2 {
			t.Errorf("sim %v: exit %d, want 2", args, code)
		}
	}
	code, out, _ := runSimCmd(t, "--help")
	if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "helix sim run --scenario") {
		t.Errorf("--help: exit %d\n%s", code, out)
	}
}
