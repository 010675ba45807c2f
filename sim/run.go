package sim

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Run runs one seed of a scenario to the end (or the first violation).
func Run(sc *Scenario, opt Options) (*Result, error) {
	s, err := New(sc, opt)
	if err != nil {
		return nil, err
	}
	return s.Run(), nil
}

// Divergence is the first difference between two runs that should be identical.
type Divergence struct {
	Event      int    // index of the first differing log line (0-based)
	A, B       string // the differing lines ("" if one run ended first)
	TraceA     string
	TraceB     string
	ContextA   []string // up to 5 lines before the divergence (identical in both)
	Scenario   string
	Seed       uint64
	ShuffleA   uint64
	ShuffleB   uint64
	Identical  bool
	EventsRunA uint64
	// ResultA is the first run's result (with ShuffleSeed shuffleA), so a caller that
	// wants it need not run the seed a third time.
	ResultA *Result
}

func (d *Divergence) String() string {
	if d.Identical {
		return fmt.Sprintf("deterministic: %s seed %d ran twice with identical traces %s (%d events)", d.Scenario, d.Seed, d.TraceA, d.EventsRunA)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "NONDETERMINISM in %s seed %d: traces %s and %s differ; first divergence at event line %d\n", d.Scenario, d.Seed, d.TraceA, d.TraceB, d.Event)
	for _, l := range d.ContextA {
		fmt.Fprintf(&b, "    %s\n", l)
	}
	fmt.Fprintf(&b, "  A: %s\n  B: %s\n", d.A, d.B)
	return b.String()
}

// CheckDeterminism runs the seed twice and reports the first divergence.
// With shuffleA ≠ shuffleB and ForceShuffle, the runs see list replies in different
// orders: a correct engine must still act identically (the trace hashes effects and
// events, not reply order), which is what catches an iteration over a list in the order
// the store happened to return it.
//
// The runs are compared by their traces, which cover everything a log line shows; only
// when they differ are both run again with full logs, to show the first differing line.
func CheckDeterminism(sc *Scenario, opt Options, shuffleA, shuffleB uint64) (*Divergence, error) {
	run := func(sh uint64, log bool) (*Result, []string, error) {
		var buf bytes.Buffer
		o := opt
		o.ShuffleSeed = sh
		if log {
			o.Log = &buf
		}
		r, err := Run(sc, o)
		if err != nil {
			return nil, nil, err
		}
		return r, strings.Split(buf.String(), "\n"), nil
	}
	opt.Log = nil // each run logs into its own buffer, and only when they differ
	ra, _, err := run(shuffleA, false)
	if err != nil {
		return nil, err
	}
	rb, _, err := run(shuffleB, false)
	if err != nil {
		return nil, err
	}
	d := &Divergence{TraceA: ra.Trace, TraceB: rb.Trace, Scenario: sc.Name, Seed: opt.Seed, ShuffleA: shuffleA, ShuffleB: shuffleB, EventsRunA: ra.Events, ResultA: ra}
	if ra.Trace == rb.Trace {
		d.Identical = true
		return d, nil
	}
	_, la, err := run(shuffleA, true)
	if err != nil {
		return nil, err
	}
	_, lb, err := run(shuffleB, true)
	if err != nil {
		return nil, err
	}
	for i := 0; i < max(len(la), len(lb)); i++ {
		var a, b string
		if i < len(la) {
			a = la[i]
		}
		if i < len(lb) {
			b = lb[i]
		}
		if a != b {
			d.Event, d.A, d.B = i, a, b
			d.ContextA = la[max(0, i-5):i]
			return d, nil
		}
	}
	d.Event = len(la)
	d.A, d.B = "(logs equal, traces differ)", ""
	return d, nil
}

// Summary aggregates the runs of one scenario over many seeds.
type Summary struct {
	Scenario   string `json:"scenario"`
	Seeds      int    `json:"seeds"`
	Violations int    `json:"violations"` // unexpected ones
	Expected   int    `json:"expected_violations"`
	Failed     int    `json:"failed"` // seeds that did not pass
	// FirstFailure is the first failing seed's violation (or nil).
	FirstFailure *Violation     `json:"first_failure,omitempty"`
	FailedSeeds  []uint64       `json:"failed_seeds,omitempty"`
	CoordP50     time.Duration  `json:"coordinator_failover_p50_ns"`
	CoordP99     time.Duration  `json:"coordinator_failover_p99_ns"`
	CoordMax     time.Duration  `json:"coordinator_failover_max_ns"`
	WorkerP50    time.Duration  `json:"worker_failover_p50_ns"`
	WorkerP99    time.Duration  `json:"worker_failover_p99_ns"`
	WorkerMax    time.Duration  `json:"worker_failover_max_ns"`
	Moves        int            `json:"partitions_moved"`
	Virtual      time.Duration  `json:"virtual_ns"`
	Wall         time.Duration  `json:"wall_ns"`
	Speed        float64        `json:"simulated_seconds_per_wall_second"`
	Events       uint64         `json:"events"`
	Coverage     map[string]int `json:"coverage"`

	// Failures counts the failed seeds by what failed: the unexpected invariant broken,
	// or "missing S3" for a seed that did not find the violation its scenario expects.
	Failures map[string]int `json:"failures,omitempty"`
	// Diverged counts the seeds whose determinism check found two different runs.
	Diverged      int      `json:"diverged"`
	DivergedSeeds []uint64 `json:"diverged_seeds,omitempty"`

	coord, worker []time.Duration // every failover so far, sorted
}

// Add folds one result in.
func (s *Summary) Add(r *Result) {
	s.Scenario = r.Scenario
	s.Seeds++
	s.Events += r.Events
	s.Virtual += r.Virtual
	s.Moves += r.Moves
	if r.Violation != nil {
		if r.Violation.Expected {
			s.Expected++
		} else {
			s.Violations++
		}
	}
	if !r.Passed {
		s.Failed++
		s.FailedSeeds = append(s.FailedSeeds, r.Seed)
		if s.Failures == nil {
			s.Failures = map[string]int{}
		}
		if r.Violation != nil {
			s.Failures[r.Violation.Invariant]++
		} else {
			s.Failures["missing "+r.ExpectedViolation]++
		}
		if s.FirstFailure == nil && r.Violation != nil {
			s.FirstFailure = r.Violation
		}
	}
	s.coord = mergeSorted(s.coord, r.CoordinatorFailovers)
	s.worker = mergeSorted(s.worker, r.WorkerFailovers)
	if s.Coverage == nil {
		s.Coverage = map[string]int{}
	}
	for k, v := range r.Coverage {
		s.Coverage[k] += v
	}
	s.CoordP50, s.CoordP99, s.CoordMax = nearestRank(s.coord, 50), nearestRank(s.coord, 99), nearestRank(s.coord, 100)
	s.WorkerP50, s.WorkerP99, s.WorkerMax = nearestRank(s.worker, 50), nearestRank(s.worker, 99), nearestRank(s.worker, 100)
}

// AddDivergence folds one determinism check in.
func (s *Summary) AddDivergence(d *Divergence) {
	if d.Identical {
		return
	}
	s.Diverged++
	s.DivergedSeeds = append(s.DivergedSeeds, d.Seed)
}

// OK reports whether every seed passed and every determinism check found identical runs.
func (s *Summary) OK() bool { return s.Failed == 0 && s.Diverged == 0 }

// Status says in a few words what failed, or "ok": each kind of failure with its count,
// then the first failing seeds.
func (s *Summary) Status() string {
	if s.OK() {
		return "ok"
	}
	var parts []string
	if s.Failed > 0 {
		var kinds []string
		for _, k := range slices.Sorted(maps.Keys(s.Failures)) {
			kinds = append(kinds, fmt.Sprintf("%s×%d", k, s.Failures[k]))
		}
		parts = append(parts, fmt.Sprintf("FAIL %s seeds %s", strings.Join(kinds, ","), seedList(s.FailedSeeds)))
	}
	if s.Diverged > 0 {
		parts = append(parts, fmt.Sprintf("NONDETERMINISTIC×%d seeds %s", s.Diverged, seedList(s.DivergedSeeds)))
	}
	return strings.Join(parts, "; ")
}

// seedList shows the first five seeds of a list and how many there are.
func seedList(seeds []uint64) string {
	if len(seeds) <= 5 {
		return fmt.Sprint(seeds)
	}
	return fmt.Sprintf("%v…(%d)", seeds[:5], len(seeds))
}

// mergeSorted returns the sorted slice with ds added, still sorted: linear in the
// total, where sorting everything again after each seed made a summary of many seeds
// quadratic.
func mergeSorted(sorted, ds []time.Duration) []time.Duration {
	if len(ds) == 0 {
		return sorted
	}
	add := slices.Clone(ds) // the result's own slice stays as it is
	slices.Sort(add)
	out := make([]time.Duration, 0, len(sorted)+len(add))
	i, j := 0, 0
	for i < len(sorted) && j < len(add) {
		if sorted[i] <= add[j] {
			out = append(out, sorted[i])
			i++
		} else {
			out = append(out, add[j])
			j++
		}
	}
	out = append(out, sorted[i:]...)
	return append(out, add[j:]...)
}

// SetWall records the wall time the runs took (measured by the caller: the simulator
// itself never reads the clock).
func (s *Summary) SetWall(d time.Duration) {
	s.Wall = d
	if d > 0 {
		s.Speed = s.Virtual.Seconds() / d.Seconds()
	}
}
