package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/helixcoord/helix/engine"
)

// `helix plan --from-db`: the plan input read from the store, judged as the coordinator
// judges it (engine/coordinator.go): a node is a worker while its status is alive and
// its heartbeat is at most DeadAfter old; a row counts as owned only while its owner is
// such a node at the row's incarnation, otherwise the allocator sees it unassigned (its
// target kept as the hint).

type planDBFlags struct {
	fromDB, printInput bool
	store              storeFlags
	deadAfter          time.Duration
	maxInFlight        int
	maxInFlightPerW    int
}

func (f *planDBFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.fromDB, "from-db", false, "read the state from the store (DSN and --cluster as for 'helix status') instead of JSON")
	fs.BoolVar(&f.printInput, "print-input", false, "with --from-db: print the state read as plan input JSON, do not plan")
	f.store.register(fs)
	fs.DurationVar(&f.deadAfter, "dead-after", engine.DefaultConfig().DeadAfter, "with --from-db: heartbeat age after which a node counts as dead (the coordinator's dead-after)")
	fs.IntVar(&f.maxInFlight, "max-in-flight", 0, "with --from-db: partitions releasing at once, cluster-wide, as the coordinator is configured (0 = unlimited)")
	fs.IntVar(&f.maxInFlightPerW, "max-in-flight-per-worker", 0, "with --from-db: partitions releasing at once from one worker (0 = unlimited)")
}

func (f *planDBFlags) read(ctx context.Context, e *env) (engine.PlanInput, error) {
	switch {
	case f.deadAfter <= 0:
		return engine.PlanInput{}, engine.Invalid("--dead-after", f.deadAfter.String(), "must be > 0")
	case f.maxInFlight < 0:
		return engine.PlanInput{}, engine.Invalid("--max-in-flight", fmt.Sprint(f.maxInFlight), "must be ≥ 0 (0 = unlimited)")
	case f.maxInFlightPerW < 0:
		return engine.PlanInput{}, engine.Invalid("--max-in-flight-per-worker", fmt.Sprint(f.maxInFlightPerW), "must be ≥ 0 (0 = unlimited)")
	}
	store, err := f.store.open(ctx, e)
	if err != nil {
		return engine.PlanInput{}, err
	}
	defer store.Close()
	st, err := store.ReadState(ctx, 0)
	if err != nil {
		return engine.PlanInput{}, fmt.Errorf("reading state: %w", err)
	}
	in := planInputFromState(st, f.deadAfter)
	in.MaxInFlight, in.MaxInFlightPerWorker = f.maxInFlight, f.maxInFlightPerW
	return in, nil
}

// planInputFromState is the allocator's input for a store's state, as the coordinator
// sees it (engine.PlanInputFromState), without the tombstones of partitions no longer
// configured and with only the fields a plan input has.
func planInputFromState(st engine.StateReply, deadAfter time.Duration) engine.PlanInput {
	in := engine.PlanInputFromState(st, deadAfter)
	rows := in.Current[:0]
	for _, a := range in.Current {
		if a.State != engine.Deleted {
			rows = append(rows, engine.Assignment{Partition: a.Partition, Owner: a.Owner, State: a.State, Target: a.Target})
		}
	}
	in.Current = rows
	return in
}

// planStateOf is the JSON plan input of in (what --print-input prints).
func planStateOf(in engine.PlanInput) planState {
	st := planState{MaxInFlight: in.MaxInFlight, MaxInFlightPerWorker: in.MaxInFlightPerWorker,
		TaskLists: []planTaskList{}, Workers: []planWorker{}, Assignments: []planRow{}}
	for _, t := range in.TaskLists {
		p := t.Partitions
		st.TaskLists = append(st.TaskLists, planTaskList{Domain: t.Domain, TaskList: t.Name, Partitions: &p})
	}
	for _, w := range in.Workers {
		c := w.Capacity
		st.Workers = append(st.Workers, planWorker{ID: w.ID, Capacity: &c, Draining: w.Draining})
	}
	for _, a := range in.Current {
		k := a.Partition.Partition
		st.Assignments = append(st.Assignments, planRow{Domain: a.Partition.Domain, TaskList: a.Partition.TaskList, Partition: &k,
			Owner: a.Owner, State: a.State.String(), Target: a.Target})
	}
	return st
}

// planRound is what the coordinator starts now: the assignments of partitions without
// a live owner and the releases within the throttle, sorted by partition.
func planRound(p engine.Plan) []planAction {
	out := make([]planAction, 0, len(p.Assign)+len(p.Release))
	for _, pm := range p.Assign {
		out = append(out, planAction{jsonMove(p.Move(pm)), "assign"})
	}
	for _, pm := range p.Release {
		out = append(out, planAction{jsonMove(p.Move(pm)), "release"})
	}
	slices.SortFunc(out, func(a, b planAction) int {
		return engine.ComparePartitions(
			engine.PartitionID{Domain: a.Domain, TaskList: a.TaskList, Partition: a.Partition},
			engine.PartitionID{Domain: b.Domain, TaskList: b.TaskList, Partition: b.Partition})
	})
	return out
}

// summarizePlan counts, per live worker, the partitions it owns now (assigned or
// releasing rows of configured partitions) and in the target.
func summarizePlan(in engine.PlanInput, p engine.Plan) planSummary {
	s := planSummary{Workers: []planWorkerSummary{}, Moves: len(p.Moves), InFlight: p.InFlight}
	idx := map[string]int{}
	capSum := 0
	for _, w := range in.Workers {
		if _, dup := idx[w.ID]; dup {
			continue
		}
		idx[w.ID] = len(s.Workers)
		s.Workers = append(s.Workers, planWorkerSummary{ID: w.ID, Capacity: max(w.Capacity, 1), Draining: w.Draining})
		if !w.Draining {
			capSum += max(w.Capacity, 1)
		}
	}
	slices.SortFunc(s.Workers, func(a, b planWorkerSummary) int { return strings.Compare(a.ID, b.ID) })
	for i, w := range s.Workers {
		idx[w.ID] = i
	}
	configured := map[[2]string]int{}
	for _, t := range p.TaskLists {
		configured[[2]string{t.Domain, t.Name}] = t.Partitions
	}
	seen := map[engine.PartitionID]bool{}
	for _, a := range in.Current {
		i, live := idx[a.Owner]
		n := configured[[2]string{a.Partition.Domain, a.Partition.TaskList}]
		if !live || (a.State != engine.Assigned && a.State != engine.Releasing) || seen[a.Partition] || a.Partition.Partition >= n {
			continue
		}
		seen[a.Partition] = true
		s.Workers[i].Before++
	}
	for _, owners := range p.Owner {
		for _, o := range owners {
			if o >= 0 {
				s.Workers[idx[p.Workers[o]]].After++
			}
		}
	}
	total := p.Partitions()
	for i := range s.Workers {
		if w := &s.Workers[i]; !w.Draining && capSum > 0 {
			w.Share = float64(total*w.Capacity) / float64(capSum)
		}
	}
	s.SpreadBefore = spreadOf(s.Workers, func(w planWorkerSummary) int { return w.Before })
	s.SpreadAfter = spreadOf(s.Workers, func(w planWorkerSummary) int { return w.After })
	return s
}

// spreadOf is max − min of partitions ÷ capacity over the eligible workers, to 3 places.
func spreadOf(ws []planWorkerSummary, count func(planWorkerSummary) int) float64 {
	lo, hi, any := 0.0, 0.0, false
	for _, w := range ws {
		if w.Draining {
			continue
		}
		v := float64(count(w)) / float64(w.Capacity)
		if !any || v < lo {
			lo = v
		}
		if !any || v > hi {
			hi = v
		}
		any = true
	}
	return float64(int((hi-lo)*1000+0.5)) / 1000
}

// looksLikeStatus: the JSON is an object with the top-level fields of `helix status
// --json` output.
func looksLikeStatus(data []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil {
		return false
	}
	_, c := m["coordinator"]
	_, n := m["nodes"]
	return c && n
}
