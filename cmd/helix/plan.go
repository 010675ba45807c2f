package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/helixcoord/helix/engine"
)

// `helix plan` is the allocator's dry run: it reads a cluster state as JSON and prints
// what the coordinator would do with it. It touches no store, so operators can ask
// "what if this worker drains?" and tests can pin the allocator's answers.

func init() {
	register(&command{name: "plan", summary: "dry run of the allocator: print the target assignment and moves for a state (JSON in, JSON out)", run: runPlan})
}

const planUsage = `Usage: helix plan [--in FILE] < state.json
       helix plan --from-db [--dsn-file FILE] [--cluster NAME] [--max-in-flight N]
                  [--max-in-flight-per-worker N] [--dead-after D] [--print-input]

Reads a cluster state as JSON and prints, as JSON, the target owner of every partition
and the moves the coordinator would make to get there. Nothing is changed anywhere.

With --from-db the state is read from the store (the same DSN and cluster flags as
'helix status'), with nodes judged alive and rows owned as the coordinator judges them,
and the output is what a coordinator with these throttle settings would do now.
--print-input prints that state as plan input JSON instead (edit it and pipe it back
to 'helix plan' to ask "what if"). 'helix status --json' output is not a plan input
(it counts partitions per node but does not list them): use --from-db.

Input:
  tasklists    [{"domain", "tasklist", "partitions"}]          partitions 0–65536
  workers      [{"id", "capacity", "draining"}]                the live workers; capacity ≥ 1
                                                               (default 1); workers not
                                                               listed are dead
  assignments  [{"domain", "tasklist", "partition", "owner",   the current rows; state is
                 "state", "target"}]                           assigned, releasing or
                                                               unassigned; target is the
                                                               next owner of a releasing row
  max_in_flight, max_in_flight_per_worker                      throttle, 0 = unlimited

Output:
  assignments  [{"domain", "tasklist", "partition", "owner"}]   every partition once;
                                                               owner "" when no worker is
                                                               eligible (the reason goes to
                                                               stderr)
  moves        [{"domain", "tasklist", "partition", "from", "to"}]
                                                               every move to the target
  round        [{"domain", "tasklist", "partition", "from", "to", "action"}]
                                                               what the coordinator starts
                                                               now: "assign" (no live owner)
                                                               or "release" (from a live
                                                               owner, within the throttle);
                                                               applying rounds again and
                                                               again reaches the target in
                                                               the fewest rounds it allows
  summary      {"workers": [{"id", "capacity", "draining", "before", "after", "share"}],
                "spread_before", "spread_after", "moves", "in_flight"}
                                                               partitions per live worker
                                                               now (before) and in the
                                                               target (after); share is
                                                               its exact share P·w/W;
                                                               spread is max − min of
                                                               partitions ÷ capacity over
                                                               eligible workers

Names (domain, tasklist, id, owner, target) are 1–128 bytes without control characters.
Rows of partitions that are not configured are ignored. Bad input exits 1 with an error
naming the field and the rule.

Example:
  echo '{"tasklists":[{"domain":"d","tasklist":"t","partitions":4}],
         "workers":[{"id":"w1","capacity":1},{"id":"w2","capacity":1}],
         "assignments":[{"domain":"d","tasklist":"t","partition":0,"owner":"w1","state":"assigned"},
                        {"domain":"d","tasklist":"t","partition":1,"owner":"w1","state":"assigned"}],
         "max_in_flight":0}' | helix plan
  # w1 keeps partitions 0 and 1; 2 and 3 go to w2.

Flags:
`

type planTaskList struct {
	Domain     string `json:"domain"`
	TaskList   string `json:"tasklist"`
	Partitions *int   `json:"partitions"`
}

type planWorker struct {
	ID       string `json:"id"`
	Capacity *int   `json:"capacity"`
	Draining bool   `json:"draining"`
}

type planRow struct {
	Domain    string `json:"domain"`
	TaskList  string `json:"tasklist"`
	Partition *int   `json:"partition"`
	Owner     string `json:"owner"`
	State     string `json:"state"`
	Target    string `json:"target,omitempty"`
}

type planState struct {
	TaskLists            []planTaskList `json:"tasklists"`
	Workers              []planWorker   `json:"workers"`
	Assignments          []planRow      `json:"assignments"`
	MaxInFlight          int            `json:"max_in_flight"`
	MaxInFlightPerWorker int            `json:"max_in_flight_per_worker"`
}

type planPlacement struct {
	Domain    string `json:"domain"`
	TaskList  string `json:"tasklist"`
	Partition int    `json:"partition"`
	Owner     string `json:"owner"`
}

type planMove struct {
	Domain    string `json:"domain"`
	TaskList  string `json:"tasklist"`
	Partition int    `json:"partition"`
	From      string `json:"from"`
	To        string `json:"to"`
}

type planOutput struct {
	Assignments []planPlacement `json:"assignments"`
	Moves       []planMove      `json:"moves"`
	Round       []planAction    `json:"round"`
	Summary     planSummary     `json:"summary"`
}

type planAction struct {
	planMove
	Action string `json:"action"` // assign or release
}

type planSummary struct {
	Workers      []planWorkerSummary `json:"workers"`
	SpreadBefore float64             `json:"spread_before"`
	SpreadAfter  float64             `json:"spread_after"`
	Moves        int                 `json:"moves"`
	InFlight     int                 `json:"in_flight"`
}

type planWorkerSummary struct {
	ID       string  `json:"id"`
	Capacity int     `json:"capacity"`
	Draining bool    `json:"draining,omitempty"`
	Before   int     `json:"before"`
	After    int     `json:"after"`
	Share    float64 `json:"share"`
}

func runPlan(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	inPath := fs.String("in", "", "read the state from `FILE` instead of stdin")
	var db planDBFlags
	db.register(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), planUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(e.stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "helix plan: unexpected argument %q (the state is read from stdin or --in)\n", fs.Arg(0))
		return 2
	}
	if db.fromDB {
		if *inPath != "" {
			fmt.Fprintf(e.stderr, "helix plan: --in and --from-db exclude each other (the state comes from one of them)\n")
			return 2
		}
		in, err := db.read(ctx, e)
		if err != nil {
			fmt.Fprintf(e.stderr, "helix plan: %v\n", err)
			return 1
		}
		if db.printInput {
			return writeJSON(e, planStateOf(in))
		}
		return printPlan(e, in)
	}
	if db.printInput {
		fmt.Fprintf(e.stderr, "helix plan: --print-input needs --from-db (it prints the state read from the store)\n")
		return 2
	}
	var r io.Reader = e.stdin
	if *inPath != "" {
		f, err := os.Open(*inPath)
		if err != nil {
			fmt.Fprintf(e.stderr, "helix plan: %v\n", err)
			return 1
		}
		defer f.Close()
		r = f
	}
	in, err := readPlanInput(r)
	if err != nil {
		fmt.Fprintf(e.stderr, "helix plan: %v\n", err)
		return 1
	}
	return printPlan(e, in)
}

// printPlan plans in and prints the plan as JSON.
func printPlan(e *env, in engine.PlanInput) int {
	p := engine.PlanAssignments(in)
	if p.Reason != "" {
		fmt.Fprintf(e.stderr, "helix plan: %s\n", p.Reason)
	}
	targets := p.Targets()
	out := planOutput{Assignments: make([]planPlacement, len(targets)), Moves: make([]planMove, len(p.Moves))}
	for i, t := range targets {
		out.Assignments[i] = planPlacement{Domain: t.Partition.Domain, TaskList: t.Partition.TaskList, Partition: t.Partition.Partition, Owner: t.Owner}
	}
	for i, pm := range p.Moves {
		out.Moves[i] = jsonMove(p.Move(pm))
	}
	out.Round = planRound(p)
	out.Summary = summarizePlan(in, p)
	return writeJSON(e, out)
}

func jsonMove(m engine.Move) planMove {
	return planMove{Domain: m.Partition.Domain, TaskList: m.Partition.TaskList, Partition: m.Partition.Partition, From: m.From, To: m.To}
}

// writeJSON prints v as indented JSON.
func writeJSON(e *env, v any) int {
	w := bufio.NewWriter(e.stdout)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(e.stderr, "helix plan: writing the plan: %v\n", err)
		return 1
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(e.stderr, "helix plan: writing the plan: %v\n", err)
		return 1
	}
	return 0
}

// readPlanInput decodes and validates a state. Every error names the field and rule.
func readPlanInput(r io.Reader) (engine.PlanInput, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return engine.PlanInput{}, fmt.Errorf("reading the state: %w", err)
	}
	var st planState
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return engine.PlanInput{}, jsonError(data, err)
	}
	if dec.More() {
		return engine.PlanInput{}, engine.Invalid("input", "", "must be exactly one JSON object; found more data after it")
	}
	return st.validate()
}

// jsonError turns a decoding error into a ValidationError with the field (or the line
// and column of a syntax error).
func jsonError(data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line, col := position(data, se.Offset)
		return engine.Invalid("input", "", fmt.Sprintf("must be valid JSON: %v at line %d, column %d", se, line, col))
	case errors.As(err, &te):
		return engine.Invalid(te.Field, "", fmt.Sprintf("must be a JSON %s, is %s", jsonKind(te.Type.Kind().String()), te.Value))
	case errors.Is(err, io.EOF):
		return engine.Invalid("input", "", "must be a JSON object; got nothing")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return engine.Invalid("input", "", "must be valid JSON: unexpected end of input")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		if looksLikeStatus(data) {
			return engine.Invalid("input", field, "is a field of 'helix status --json' output, which counts partitions per node but does not list them, so it is not a plan input; run 'helix plan --from-db' (with the same DSN and cluster flags) to plan from the live state, or 'helix plan --from-db --print-input' for a plan input to edit")
		}
		return engine.Invalid("input", field, "is not a known field (known: tasklists, workers, assignments, max_in_flight, max_in_flight_per_worker and their documented members)")
	}
	return engine.Invalid("input", "", "must be valid JSON: "+err.Error())
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64":
		return "integer"
	case "slice":
		return "array"
	case "struct":
		return "object"
	}
	return k
}

func position(data []byte, off int64) (line, col int) {
	line, col = 1, 1
	for i := int64(0); i < off && i < int64(len(data)); i++ {
		if data[i] == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

func (st planState) validate() (engine.PlanInput, error) {
	var in engine.PlanInput
	type tlName struct{ d, n string }
	seen := map[tlName]bool{}
	for i, t := range st.TaskLists {
		f := fmt.Sprintf("tasklists[%d]", i)
		if err := engine.ValidateName(f+".domain", t.Domain); err != nil {
			return in, err
		}
		if err := engine.ValidateName(f+".tasklist", t.TaskList); err != nil {
			return in, err
		}
		if t.Partitions == nil {
			return in, engine.Invalid(f+".partitions", "", "is required")
		}
		if p := *t.Partitions; p < 0 || p > engine.MaxPartitions {
			return in, engine.Invalid(f+".partitions", fmt.Sprint(p), fmt.Sprintf("must be 0–%d", engine.MaxPartitions))
		}
		k := tlName{t.Domain, t.TaskList}
		if seen[k] {
			return in, engine.Invalid(f, t.Domain+"/"+t.TaskList, "is listed twice")
		}
		seen[k] = true
		in.TaskLists = append(in.TaskLists, engine.TaskList{Domain: t.Domain, Name: t.TaskList, Partitions: *t.Partitions})
	}
	ids := map[string]bool{}
	for i, w := range st.Workers {
		f := fmt.Sprintf("workers[%d]", i)
		if err := engine.ValidateName(f+".id", w.ID); err != nil {
			return in, err
		}
		if ids[w.ID] {
			return in, engine.Invalid(f+".id", fmt.Sprintf("%q", w.ID), "is listed twice (worker ids must be unique)")
		}
		ids[w.ID] = true
		c := 1
		if w.Capacity != nil {
			c = *w.Capacity
		}
		if c < 1 {
			return in, engine.Invalid(f+".capacity", fmt.Sprint(c), "must be ≥ 1")
		}
		in.Workers = append(in.Workers, engine.Worker{ID: w.ID, Capacity: c, Draining: w.Draining})
	}
	type rowKey struct {
		d, n string
		p    int
	}
	rows := map[rowKey]bool{}
	for i, a := range st.Assignments {
		f := fmt.Sprintf("assignments[%d]", i)
		if err := engine.ValidateName(f+".domain", a.Domain); err != nil {
			return in, err
		}
		if err := engine.ValidateName(f+".tasklist", a.TaskList); err != nil {
			return in, err
		}
		if a.Partition == nil {
			return in, engine.Invalid(f+".partition", "", "is required")
		}
		if *a.Partition < 0 {
			return in, engine.Invalid(f+".partition", fmt.Sprint(*a.Partition), "must be ≥ 0")
		}
		k := rowKey{a.Domain, a.TaskList, *a.Partition}
		if rows[k] {
			return in, engine.Invalid(f, fmt.Sprintf("%s/%s/%d", a.Domain, a.TaskList, *a.Partition), "is listed twice (one row per partition)")
		}
		rows[k] = true
		var state engine.PartitionState
		switch a.State {
		case "assigned":
			state = engine.Assigned
		case "releasing":
			state = engine.Releasing
		case "unassigned":
			state = engine.Unassigned
		default:
			return in, engine.Invalid(f+".state", fmt.Sprintf("%q", a.State), "must be assigned, releasing or unassigned")
		}
		if state == engine.Unassigned {
			if a.Owner != "" {
				return in, engine.Invalid(f+".owner", fmt.Sprintf("%q", a.Owner), "must be empty when state is unassigned")
			}
		} else if err := engine.ValidateName(f+".owner", a.Owner); err != nil {
			return in, err
		}
		if a.Target != "" {
			if err := engine.ValidateName(f+".target", a.Target); err != nil {
				return in, err
			}
		}
		in.Current = append(in.Current, engine.Assignment{
			Partition: engine.PartitionID{Domain: a.Domain, TaskList: a.TaskList, Partition: *a.Partition},
			Owner:     a.Owner, State: state, Target: a.Target,
		})
	}
	if st.MaxInFlight < 0 {
		return in, engine.Invalid("max_in_flight", fmt.Sprint(st.MaxInFlight), "must be ≥ 0 (0 = unlimited)")
	}
	if st.MaxInFlightPerWorker < 0 {
		return in, engine.Invalid("max_in_flight_per_worker", fmt.Sprint(st.MaxInFlightPerWorker), "must be ≥ 0 (0 = unlimited)")
	}
	in.MaxInFlight, in.MaxInFlightPerWorker = st.MaxInFlight, st.MaxInFlightPerWorker
	return in, nil
}
