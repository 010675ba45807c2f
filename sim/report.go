package sim

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/helixcoord/helix/engine"
)

// Violation is the first invariant a run broke, with what is needed to replay it.
type Violation struct {
	Scenario  string        `json:"scenario"`
	Seed      uint64        `json:"seed"`
	Event     uint64        `json:"event"`
	At        time.Duration `json:"at_ns"`
	Invariant string        `json:"invariant"`
	Message   string        `json:"message"`
	// Expected: the scenario declares this violation (expect.violation).
	Expected bool     `json:"expected"`
	Recent   []string `json:"recent_events"`
	// Ref is how the replay command names the scenario (Options.Ref).
	Ref string `json:"-"`
}

// Replay is the command that reproduces the run.
func (v *Violation) Replay() string {
	ref := v.Scenario
	if v.Ref != "" {
		ref = v.Ref
	}
	return fmt.Sprintf("helix sim run --scenario %s --seed %d", ref, v.Seed)
}

func (v *Violation) String() string {
	var b strings.Builder
	tag := "VIOLATION"
	if v.Expected {
		tag = "EXPECTED VIOLATION"
	}
	fmt.Fprintf(&b, "%s %s in scenario %s, seed %d, event #%d at %s:\n  %s\n", tag, v.Invariant, v.Scenario, v.Seed, v.Event, fmtV(int64(v.At)), v.Message)
	fmt.Fprintf(&b, "last %d events:\n", len(v.Recent))
	for _, l := range v.Recent {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	fmt.Fprintf(&b, "replay: %s\n", v.Replay())
	return b.String()
}

// Result is the outcome of one run.
type Result struct {
	Scenario string `json:"scenario"`
	Seed     uint64 `json:"seed"`
	// Trace is the run's fingerprint: a hash of every event and every effect. The same
	// scenario and seed give the same trace.
	Trace     string        `json:"trace"`
	Events    uint64        `json:"events"`
	Steps     uint64        `json:"steps"`
	Virtual   time.Duration `json:"virtual_ns"`
	Violation *Violation    `json:"violation,omitempty"`
	// Passed: no violation, or exactly the one the scenario expects.
	Passed bool `json:"passed"`
	// ExpectedViolation is the invariant the scenario expects to break ("" if none).
	ExpectedViolation string `json:"expected_violation,omitempty"`
	// CoordinatorFailovers and WorkerFailovers are virtual durations from a fault
	// hitting the coordinator (a worker) to a new coordinator (the partition processed
	// again).
	CoordinatorFailovers []time.Duration `json:"coordinator_failovers_ns"`
	WorkerFailovers      []time.Duration `json:"worker_failovers_ns"`
	Moves                int             `json:"moves"`
	// Converged is how long after the heal L1–L3 first held (-1: never, or no liveness).
	Converged time.Duration `json:"converged_ns"`
	// Coverage counts faults injected and interesting states reached; NodeEvents counts
	// the engine's Event effects by kind.
	Coverage   map[string]int `json:"coverage"`
	NodeEvents map[string]int `json:"node_events"`
	Timeline   *Timeline      `json:"-"`
}

// Result summarises the run so far.
func (s *Sim) Result() *Result {
	r := &Result{
		Scenario:             s.sc.Name,
		Seed:                 s.seed,
		Trace:                fmt.Sprintf("%016x", uint64(s.hash)),
		Events:               s.nEvents,
		Steps:                s.steps,
		Virtual:              time.Duration(s.now),
		Violation:            s.viol,
		CoordinatorFailovers: s.metrics.coordFail,
		WorkerFailovers:      s.metrics.workerFail,
		Moves:                s.metrics.moves,
		Converged:            time.Duration(s.metrics.converged),
		Coverage:             s.cov,
		NodeEvents:           s.evCov,
		Timeline:             s.tl,
		ExpectedViolation:    s.sc.Expect.Violation,
	}
	if s.metrics.converged < 0 {
		r.Converged = -1
	}
	switch {
	case s.viol != nil:
		r.Passed = s.viol.Expected
	case s.sc.Expect.Violation != "":
		r.Passed = false
	default:
		r.Passed = true
	}
	if s.tl != nil {
		s.tl.End = time.Duration(s.now)
		for len(s.tl.Nodes) < len(s.nodes) {
			s.tl.Nodes = append(s.tl.Nodes, s.nodes[len(s.tl.Nodes)].id)
		}
	}
	return r
}

// metrics measures failovers and moves.
type metrics struct {
	healAt    int64
	converged int64
	convRev   uint64
	convEpoch uint64
	moves     int
	// movesCounted: the moves from Expect.MovesAfter on (checked against Expect.Moves).
	movesCounted int

	coordFail  []time.Duration
	workerFail []time.Duration

	coordStart int64 // -1: no coordinator failover in progress
	coordEpoch uint64
	coordNode  int32
	coordGen   uint32

	pending map[engine.PartitionID]pendingFail
}

type pendingFail struct {
	start int64
	node  int32
	gen   uint64
}

func (m *metrics) init() {
	m.converged = -1
	m.coordStart = -1
	m.pending = map[engine.PartitionID]pendingFail{}
}

func (m *metrics) faultHits(s *Sim, nd *simNode) {
	now := s.now
	if m.coordStart < 0 && nd.believesCoordinator(now) {
		m.coordStart, m.coordEpoch, m.coordNode, m.coordGen = now, nd.st.Epoch, nd.idx, nd.gen
	}
	if nd.live(now) {
		for _, o := range nd.st.Owned {
			if _, ok := m.pending[o.Partition]; !ok {
				m.pending[o.Partition] = pendingFail{now, nd.idx, o.Generation}
			}
		}
	}
}

func (m *metrics) faultEnds(s *Sim, nd *simNode) {
	now := s.now
	if m.coordStart >= 0 && m.coordNode == nd.idx && nd.gen == m.coordGen && nd.believesCoordinator(now) && nd.st.Epoch == m.coordEpoch {
		m.coordStart = -1
	}
	if nd.live(now) {
		for _, o := range nd.st.Owned {
			if p, ok := m.pending[o.Partition]; ok && p.node == nd.idx && p.gen == o.Generation {
				delete(m.pending, o.Partition)
			}
		}
	}
}

func (m *metrics) newCoordinator(s *Sim, nd *simNode) {
	// A new tenure: a higher epoch, or the same node's new process re-acquiring its own
	// lease (the store renews a lease for the same owner, keeping the epoch).
	if m.coordStart >= 0 && (nd.st.Epoch > m.coordEpoch || nd.idx != m.coordNode || nd.gen != m.coordGen) {
		d := time.Duration(s.now - m.coordStart)
		m.coordFail = append(m.coordFail, d)
		m.coordStart = -1
		if b := s.sc.Expect.CoordinatorWithin.D(); b > 0 && d > b {
			s.fail("B1", fmt.Sprintf("coordinator failover took %v (bound %v): %s leads at epoch %d", d, b, nd.id, nd.st.Epoch))
		}
	}
}

func (m *metrics) processed(s *Sim, nd *simNode, o engine.OwnedPartition) {
	p, ok := m.pending[o.Partition]
	// Processed again: by a new owner at a higher generation, or by the node the fault
	// hit, at the same generation, after it self-fenced and a heartbeat told it that it
	// still owns the partition (nobody declared it dead meanwhile).
	if !ok || o.Generation < p.gen || (o.Generation == p.gen && nd.idx != p.node) {
		return
	}
	delete(m.pending, o.Partition)
	d := time.Duration(s.now - p.start)
	m.workerFail = append(m.workerFail, d)
	if b := s.sc.Expect.WorkerWithin.D(); b > 0 && d > b {
		s.fail("B2", fmt.Sprintf("%s processed again %v after the fault hit %s (bound %v)", o.Partition, d, s.nodes[p.node].id, b))
	}
}

// checkBounds fails a failover that is overdue even though it has not ended.
func (m *metrics) checkBounds(s *Sim) {
	if b := s.sc.Expect.CoordinatorWithin.D(); b > 0 && m.coordStart >= 0 && time.Duration(s.now-m.coordStart) > b {
		s.fail("B1", fmt.Sprintf("no new coordinator %v after the fault that hit %s at %s (bound %v)", time.Duration(s.now-m.coordStart), s.nodes[m.coordNode].id, fmtV(m.coordStart), b))
		return
	}
	if b := s.sc.Expect.WorkerWithin.D(); b > 0 && len(m.pending) > 0 {
		var late []engine.PartitionID
		for p, f := range m.pending {
			if !s.configured(p) {
				delete(m.pending, p) // deleted meanwhile: nothing to wait for
				continue
			}
			if time.Duration(s.now-f.start) > b {
				late = append(late, p)
			}
		}
		if len(late) > 0 {
			p := slices.MinFunc(late, engine.ComparePartitions)
			f := m.pending[p]
			s.fail("B2", fmt.Sprintf("%s not processed again %v after the fault that hit %s at %s (bound %v)", p, time.Duration(s.now-f.start), s.nodes[f.node].id, fmtV(f.start), b))
		}
	}
}

// Percentile returns the p-th percentile (0–100) of ds by nearest rank, 0 if empty.
func Percentile(ds []time.Duration, p float64) time.Duration {
	c := slices.Clone(ds)
	slices.Sort(c)
	return nearestRank(c, p)
}

// nearestRank is Percentile of an already sorted slice.
func nearestRank(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := int(p/100*float64(len(sorted))+0.999999) - 1
	k = min(max(k, 0), len(sorted)-1)
	return sorted[k]
}
