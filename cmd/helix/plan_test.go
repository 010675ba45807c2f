package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
