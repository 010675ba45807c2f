package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/mysqlstore"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

func runPlanCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	code = run(context.Background(), e, append([]string{"plan"}, args...))
	return code, out.String(), errb.String()
}

func TestPlanOutput(t *testing.T) {
	in := `{"tasklists":[{"domain":"d","tasklist":"t","partitions":4}],
	  "workers":[{"id":"w1","capacity":1,"draining":false},{"id":"w2","capacity":1}],
	  "assignments":[{"domain":"d","tasklist":"t","partition":0,"owner":"w1","state":"assigned"},
	                 {"domain":"d","tasklist":"t","partition":1,"owner":"w1","state":"assigned"},
	                 {"domain":"d","tasklist":"t","partition":2,"owner":"w1","state":"assigned"},
	                 {"domain":"d","tasklist":"t","partition":3,"owner":"gone","state":"assigned"}],
	  "max_in_flight":0}`
	code, out, stderr := runPlanCmd(t, in)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	var got planOutput
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("output is not the documented JSON: %v\n%s", err, out)
	}
	want := planOutput{
		Assignments: []planPlacement{
			{"d", "t", 0, "w1"}, {"d", "t", 1, "w1"}, {"d", "t", 2, "w2"}, {"d", "t", 3, "w2"},
		},
		Moves: []planMove{
			{"d", "t", 2, "w1", "w2"}, {"d", "t", 3, "gone", "w2"},
		},
		Round: []planAction{
			{planMove{"d", "t", 2, "w1", "w2"}, "release"}, {planMove{"d", "t", 3, "gone", "w2"}, "assign"},
		},
		Summary: planSummary{
			Workers:      []planWorkerSummary{{ID: "w1", Capacity: 1, Before: 3, After: 2, Share: 2}, {ID: "w2", Capacity: 1, Before: 0, After: 2, Share: 2}},
			SpreadBefore: 3, SpreadAfter: 0, Moves: 2,
		},
	}
	if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
		t.Fatalf("plan\n got %s\nwant %s", g, w)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPlanNoEligibleWorker(t *testing.T) {
	code, out, stderr := runPlanCmd(t, `{"tasklists":[{"domain":"d","tasklist":"t","partitions":2}],"workers":[{"id":"w1","capacity":1,"draining":true}],"assignments":[],"max_in_flight":0}`)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "no eligible worker") {
		t.Errorf("stderr %q should say why nothing is assigned", stderr)
	}
	var got planOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Assignments) != 2 || got.Assignments[0].Owner != "" || got.Assignments[1].Owner != "" || got.Moves == nil || len(got.Moves) != 0 {
		t.Errorf("got %+v; want both partitions listed with owner \"\" and an empty moves array", got)
	}
	if !strings.Contains(out, `"moves": []`) {
		t.Errorf("moves must be an empty array, not null:\n%s", out)
	}
}

func TestPlanEmpty(t *testing.T) {
	code, out, stderr := runPlanCmd(t, `{}`)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(out, `"assignments": []`) {
		t.Errorf("want an empty assignments array:\n%s", out)
	}
}

func TestPlanInvalid(t *testing.T) {
	ok := func(edit string) string {
		return `{"tasklists":[{"domain":"d","tasklist":"t","partitions":3}],"workers":[{"id":"w1","capacity":1}],` + edit + `}`
	}
	cases := []struct {
		name, in string
		want     []string // substrings of the error: field and rule
	}{
		{"malformed JSON", `{"tasklists":[`, []string{"input", "valid JSON"}},
		{"syntax error position", "{\n\"workers\": [}\n}", []string{"input", "line 2"}},
		{"empty input", ``, []string{"input", "JSON object"}},
		{"trailing data", `{} {}`, []string{"input", "exactly one"}},
		{"unknown field", `{"worker":[]}`, []string{"worker", "known field"}},
		{"wrong type", `{"tasklists":[{"domain":"d","tasklist":"t","partitions":"3"}]}`, []string{"tasklists.partitions", "integer"}},
		{"negative partitions", `{"tasklists":[{"domain":"d","tasklist":"t","partitions":-1}]}`, []string{"tasklists[0].partitions", "0–65536"}},
		{"too many partitions", `{"tasklists":[{"domain":"d","tasklist":"t","partitions":70000}]}`, []string{"tasklists[0].partitions", "0–65536"}},
		{"missing partitions", `{"tasklists":[{"domain":"d","tasklist":"t"}]}`, []string{"tasklists[0].partitions", "required"}},
		{"duplicate task list", `{"tasklists":[{"domain":"d","tasklist":"t","partitions":1},{"domain":"d","tasklist":"t","partitions":2}]}`, []string{"tasklists[1]", "twice"}},
		{"long name", `{"tasklists":[{"domain":"` + strings.Repeat("x", 129) + `","tasklist":"t","partitions":1}]}`, []string{"tasklists[0].domain", "1–128 bytes"}},
		{"empty name", `{"tasklists":[{"domain":"d","tasklist":"","partitions":1}]}`, []string{"tasklists[0].tasklist", "1–128 bytes"}},
		{"control character", `{"workers":[{"id":"w\u0007","capacity":1}]}`, []string{"workers[0].id", "control characters"}},
		{"duplicate worker", `{"workers":[{"id":"w","capacity":1},{"id":"w","capacity":2}]}`, []string{"workers[1].id", "twice"}},
		{"capacity zero", `{"workers":[{"id":"w","capacity":0}]}`, []string{"workers[0].capacity", "≥ 1"}},
		{"negative capacity", `{"workers":[{"id":"w","capacity":-3}]}`, []string{"workers[0].capacity", "≥ 1"}},
		{"unknown state", ok(`"assignments":[{"domain":"d","tasklist":"t","partition":0,"owner":"w1","state":"running"}]`), []string{"assignments[0].state", "assigned, releasing or unassigned"}},
		{"negative partition number", ok(`"assignments":[{"domain":"d","tasklist":"t","partition":-2,"owner":"w1","state":"assigned"}]`), []string{"assignments[0].partition", "≥ 0"}},
		{"row listed twice", ok(`"assignments":[{"domain":"d","tasklist":"t","partition":0,"owner":"w1","state":"assigned"},{"domain":"d","tasklist":"t","partition":0,"owner":"w1","state":"releasing"}]`), []string{"assignments[1]", "twice"}},
		{"assigned without owner", ok(`"assignments":[{"domain":"d","tasklist":"t","partition":0,"state":"assigned"}]`), []string{"assignments[0].owner", "1–128 bytes"}},
		{"negative max_in_flight", ok(`"max_in_flight":-1`), []string{"max_in_flight", "≥ 0"}},
		{"negative max_in_flight_per_worker", ok(`"max_in_flight_per_worker":-1`), []string{"max_in_flight_per_worker", "≥ 0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, stderr := runPlanCmd(t, c.in)
			if code != 1 {
				t.Fatalf("exit %d, want 1 (stderr %q)", code, stderr)
			}
			if out != "" {
				t.Errorf("printed a plan for bad input: %s", out)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("error %q does not mention %q", stderr, w)
				}
			}
		})
	}
}

func TestPlanHelpAndFlags(t *testing.T) {
	code, out, _ := runPlanCmd(t, "", "--help")
	if code != 0 || !strings.Contains(out, "Example:") || !strings.Contains(out, "helix plan") {
		t.Errorf("--help: exit %d, output %q; want 0 and usage with an example", code, out)
	}
	if code, _, _ := runPlanCmd(t, "", "--no-such-flag"); code != 2 {
		t.Errorf("bad flag: exit %d, want 2", code)
	}
	if code, _, _ := runPlanCmd(t, "{}", "extra"); code != 2 {
		t.Errorf("stray argument: exit %d, want 2", code)
	}
}

func TestPlanInFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte(`{"tasklists":[{"domain":"d","tasklist":"t","partitions":1}],"workers":[{"id":"w"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runPlanCmd(t, "", "--in", path)
	if code != 0 || !strings.Contains(out, `"owner": "w"`) {
		t.Fatalf("exit %d, out %s, stderr %s", code, out, stderr)
	}
	if code, _, stderr := runPlanCmd(t, "", "--in", filepath.Join(t.TempDir(), "missing.json")); code != 1 || stderr == "" {
		t.Errorf("missing file: exit %d, stderr %q; want 1 and an error", code, stderr)
	}
}

// The round is what the coordinator starts now: with max_in_flight 1, one release of
// the two moves from w1, and the partition of the dead owner at once. The summary shows
// many small task lists balanced cluster-wide: the worker that joined gets its share.
func TestPlanRoundAndSummary(t *testing.T) {
	var rows []string
	for k := 0; k < 4; k++ {
		for _, tl := range []string{"a", "b", "c"} {
			owner := []string{"w1", "w2"}[k%2]
			rows = append(rows, fmt.Sprintf(`{"domain":"d","tasklist":%q,"partition":%d,"owner":%q,"state":"assigned"}`, tl, k, owner))
		}
	}
	in := `{"tasklists":[{"domain":"d","tasklist":"a","partitions":4},{"domain":"d","tasklist":"b","partitions":4},{"domain":"d","tasklist":"c","partitions":4}],
	  "workers":[{"id":"w1"},{"id":"w2"},{"id":"w3"}],
	  "assignments":[` + strings.Join(rows, ",") + `],
	  "max_in_flight":1}`
	code, out, stderr := runPlanCmd(t, in)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	var got planOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	// 12 partitions over 3 workers: 4 each; w1 and w2 hold 6 each: 4 moves to w3.
	if len(got.Moves) != 4 || len(got.Round) != 1 || got.Round[0].Action != "release" || got.Round[0].To != "w3" {
		t.Fatalf("moves %v round %v; want 4 moves and one release to w3 (max_in_flight 1)", got.Moves, got.Round)
	}
	sum := got.Summary
	if len(sum.Workers) != 3 || sum.Workers[2].ID != "w3" || sum.Workers[2].Before != 0 || sum.Workers[2].After != 4 || sum.SpreadBefore != 6 || sum.SpreadAfter != 0 {
		t.Fatalf("summary %+v; want w3 0 → 4, spread 6 → 0", sum)
	}
}

// `helix status --json` output is not a plan input; the error says what to run.
func TestPlanStatusInput(t *testing.T) {
	code, _, stderr := runPlanCmd(t, `{"now":"2026-01-01T00:00:00Z","coordinator":{"key":"coordinator","held":false,"epoch":0,"expires_in_ns":0},"nodes":[],"task_lists":[],"handoffs":[],"partitions":0,"owned":0}`)
	if code != 1 || !strings.Contains(stderr, "helix plan --from-db") || !strings.Contains(stderr, "helix status --json") {
		t.Fatalf("exit %d, stderr %q; want 1 and an error naming 'helix plan --from-db'", code, stderr)
	}
	if code, _, stderr := runPlanCmd(t, "{}", "--print-input"); code != 2 || !strings.Contains(stderr, "--from-db") {
		t.Fatalf("--print-input without --from-db: exit %d, stderr %q; want 2", code, stderr)
	}
}

// --from-db reads the live state: two fresh nodes and a task list of 6 partitions, none
// assigned yet; the round assigns all six, three each. --print-input's output, piped
// back into 'helix plan', plans the same.
func TestPlanFromDB(t *testing.T) {
	dsn := mysqltest.DSN(t)
	vars := map[string]string{"HELIX_DSN": dsn}
	if code, _, errOut := quick(t, vars, "migrate"); code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, errOut)
	}
	ctx := context.Background()
	s, err := mysqlstore.Open(ctx, dsn, mysqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t", Partitions: 6}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"n1", "n2"} {
		if _, err := s.RegisterNode(ctx, engine.NodeSpec{ID: id, Capacity: 1}); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := quick(t, vars, "plan", "--from-db", "--dead-after", "1h")
	if code != 0 {
		t.Fatalf("plan --from-db: exit %d: %s", code, errOut)
	}
	var got planOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Round) != 6 || got.Round[0].Action != "assign" || len(got.Summary.Workers) != 2 || got.Summary.Workers[0].After != 3 || got.Summary.Workers[1].After != 3 {
		t.Fatalf("round %v summary %+v; want six assignments, three to each node", got.Round, got.Summary)
	}
	code, input, errOut := quick(t, vars, "plan", "--from-db", "--dead-after", "1h", "--print-input")
	if code != 0 {
		t.Fatalf("plan --from-db --print-input: exit %d: %s", code, errOut)
	}
	code, again, errOut := runPlanCmd(t, input)
	if code != 0 || again != out {
		t.Fatalf("the printed input plans differently (exit %d, %s):\n%s\nwant\n%s", code, errOut, again, out)
	}
	if code, _, errOut := quick(t, vars, "plan", "--from-db", "--max-in-flight", "-1"); code != 1 || !strings.Contains(errOut, "--max-in-flight") {
		t.Fatalf("--max-in-flight -1: exit %d, stderr %q; want 1 naming the flag", code, errOut)
	}
}
