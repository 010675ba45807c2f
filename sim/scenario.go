package sim

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/helixcoord/helix/engine"
)

// Duration is a time.Duration written in scenario files as a Go duration string ("1.5s",
// "250ms"). Numbers are refused: a bare 6 could mean seconds or nanoseconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"1.5s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %v", s, err)
	}
	*d = Duration(v)
	return nil
}

// Scenario is one simulated run: a cluster, its timing, the network, a timeline of faults
// and operator actions, and what must hold. The JSON form is documented in
// scenarios/README.md; the Go form is used directly by tests.
type Scenario struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Duration is the run length in virtual time (extended to HealAt+ConvergeWithin when
	// liveness is checked).
	Duration  Duration      `json:"duration"`
	Nodes     []NodeGroup   `json:"nodes"`
	TaskLists []TaskListDef `json:"tasklists"`
	Config    TimingConfig  `json:"config"`
	Network   Network       `json:"network"`
	Timeline  []Action      `json:"timeline"`
	Swarm     *Swarm        `json:"swarm,omitempty"`
	Expect    Expect        `json:"expect"`
	// Failing lists partition handlers that fail on given nodes (failing.go).
	Failing []FailingHandler `json:"failing_handlers,omitempty"`
}

// NodeGroup is Count nodes named Prefix1..PrefixN that start at Start.
type NodeGroup struct {
	Prefix   string `json:"prefix"`
	Count    int    `json:"count"`
	Capacity int    `json:"capacity,omitempty"`
	// NoWork: coordinator-only nodes; NoCandidate: worker-only nodes.
	NoWork      bool     `json:"no_work,omitempty"`
	NoCandidate bool     `json:"no_candidate,omitempty"`
	Start       Duration `json:"start,omitempty"`
	// ClockOffset and Drift set each node's clock: offset + virtual·(1+drift).
	ClockOffset Duration `json:"clock_offset,omitempty"`
	Drift       float64  `json:"drift,omitempty"`
}

// TaskListDef is a task list created by the operator before the run starts.
type TaskListDef struct {
	Domain     string `json:"domain"`
	Name       string `json:"name"`
	Partitions int    `json:"partitions"`
}

// TaskList converts to the engine type.
func (t TaskListDef) TaskList() engine.TaskList {
	return engine.TaskList{Domain: t.Domain, Name: t.Name, Partitions: t.Partitions}
}

// TimingConfig is the engine configuration shared by every node; zero fields take the
// engine's defaults.
type TimingConfig struct {
	LeaseTTL             Duration `json:"lease_ttl,omitempty"`
	RenewInterval        Duration `json:"renew_interval,omitempty"`
	RetryPeriod          Duration `json:"retry_period,omitempty"`
	Heartbeat            Duration `json:"heartbeat,omitempty"`
	DeadAfter            Duration `json:"dead_after,omitempty"`
	Tick                 Duration `json:"tick,omitempty"`
	DriftRate            float64  `json:"drift_rate,omitempty"`
	SafetyMargin         Duration `json:"safety_margin,omitempty"`
	RequestTimeout       Duration `json:"request_timeout,omitempty"`
	MaxInFlight          int      `json:"max_in_flight,omitempty"`
	MaxInFlightPerWorker int      `json:"max_in_flight_per_worker,omitempty"`
	// Supervision of failing handlers (engine.Config's fields of the same names).
	RestartBase      Duration `json:"restart_base,omitempty"`
	RestartMax       Duration `json:"restart_max,omitempty"`
	GiveBackAfter    int      `json:"give_back_after,omitempty"`
	GiveBackWindow   Duration `json:"give_back_window,omitempty"`
	GiveBackCoolDown Duration `json:"give_back_cool_down,omitempty"`
}

// EngineConfig builds the engine.Config of one node.
func (t TimingConfig) EngineConfig(id string, g NodeGroup) engine.Config {
	return engine.Config{
		NodeID:               id,
		Capacity:             max(g.Capacity, 1),
		NoWork:               g.NoWork,
		NoCandidate:          g.NoCandidate,
		LeaseTTL:             t.LeaseTTL.D(),
		RenewInterval:        t.RenewInterval.D(),
		RetryPeriod:          t.RetryPeriod.D(),
		Heartbeat:            t.Heartbeat.D(),
		DeadAfter:            t.DeadAfter.D(),
		Tick:                 t.Tick.D(),
		DriftRate:            t.DriftRate,
		SafetyMargin:         t.SafetyMargin.D(),
		RequestTimeout:       t.RequestTimeout.D(),
		MaxInFlight:          t.MaxInFlight,
		MaxInFlightPerWorker: t.MaxInFlightPerWorker,
		RestartBase:          t.RestartBase.D(),
		RestartMax:           t.RestartMax.D(),
		GiveBackAfter:        t.GiveBackAfter,
		GiveBackWindow:       t.GiveBackWindow.D(),
		GiveBackCoolDown:     t.GiveBackCoolDown.D(),
	}.WithDefaults()
}

// Latency is the one-way delay of one network leg (node→store or store→node):
// Base + an exponential draw with mean Jitter, and with probability TailProb an extra
// uniform delay up to Tail.
type Latency struct {
	Base     Duration `json:"base,omitempty"`
	Jitter   Duration `json:"jitter,omitempty"`
	TailProb float64  `json:"tail_prob,omitempty"`
	Tail     Duration `json:"tail,omitempty"`
}

// Network is the simulated link between nodes and the store.
type Network struct {
	Latency Latency `json:"latency"`
	// RequestLoss: probability a request never reaches the store (not applied).
	// ReplyLoss: probability the reply is lost after the store applied it (ambiguous).
	RequestLoss float64 `json:"request_loss,omitempty"`
	ReplyLoss   float64 `json:"reply_loss,omitempty"`
	// ShuffleLists makes the store return list replies (nodes, task lists, assignment
	// rows) in a random order, like a query without ORDER BY. A correct engine does
	// not care; the determinism check compares runs with different orders.
	ShuffleLists bool `json:"shuffle_lists,omitempty"`
}

// Action is one entry of a timeline: a fault or an operator action at virtual time At.
// Which fields apply depends on Do; Validate names the field and rule of a bad entry.
type Action struct {
	At Duration `json:"at"`
	Do string   `json:"do"`
	// Target selects nodes: a node id, a comma-separated list of ids, "coordinator",
	// "worker" (a random live node that is not the coordinator), "random" (any live
	// node), "all", "half" (a random half of the live nodes), "crashed", "prefix:P".
	Target string `json:"target,omitempty"`
	// For makes a fault temporary: crash restarts, pause resumes, partition heals,
	// store_outage, latency and loss end after For.
	For Duration `json:"for,omitempty"`
	// Buffer (partition): messages are held, not dropped, and delivered when the
	// partition heals (a TCP connection that stalls, then flushes): requests sent
	// before the heal reach the store late, long after their senders gave up.
	Buffer bool `json:"buffer,omitempty"`
	// Hold (pause): "apply" arms the pause instead of starting it: it begins right
	// after the node's next Apply is emitted, and that Apply stays in the process until
	// the pause ends (a GC pause between deciding to write and writing).
	Hold string `json:"hold,omitempty"`
	// Permanent (crash): the node dies for good: neither the heal nor a restart brings it
	// back, and liveness is checked over the nodes that remain.
	Permanent bool `json:"permanent,omitempty"`
	// Fault (store_fault): what the store does to each Apply while it lasts (with
	// probability Rate, default 1): "commit_then_error" commits the batch, then the
	// client gets an error instead of the reply (the connection died after COMMIT);
	// "deadlock" hits a deadlock part-way through the batch: the transaction is rolled
	// back whole and the client gets a retryable error.
	Fault string  `json:"fault,omitempty"`
	Rate  float64 `json:"rate,omitempty"`
	// Repeat and Every repeat the action (a flapping node): Repeat more times, Every apart.
	Repeat int      `json:"repeat,omitempty"`
	Every  Duration `json:"every,omitempty"`
	// clock: jump the node clock forward by Jump and set its drift rate to Drift.
	Jump  Duration `json:"jump,omitempty"`
	Drift *float64 `json:"drift,omitempty"`
	// latency: the extra latency added to every leg while it lasts (only the target's
	// legs if Target is set).
	Latency *Latency `json:"latency,omitempty"`
	// loss: loss probabilities while it lasts (only the target's messages if Target is
	// set).
	RequestLoss float64 `json:"request_loss,omitempty"`
	ReplyLoss   float64 `json:"reply_loss,omitempty"`
	// put_tasklist / delete_tasklist.
	TaskList *TaskListDef `json:"tasklist,omitempty"`
	// join: Count new nodes like Group (Prefix required).
	Count int        `json:"count,omitempty"`
	Group *NodeGroup `json:"group,omitempty"`
}

// Action kinds.
const (
	DoCrash       = "crash"        // process dies, memory lost; restarts after For if set
	DoRestart     = "restart"      // start crashed nodes again (same id, new process)
	DoPause       = "pause"        // no steps for For, then resumes with stale beliefs
	DoPartition   = "partition"    // cut node(s) off from the store; heals after For if set
	DoHeal        = "heal"         // heal node(s)' partition from the store
	DoClock       = "clock"        // jump the clock forward and/or set the drift rate
	DoStoreOutage = "store_outage" // the store answers nothing (or refuses) for For
	DoLatency     = "latency"      // extra latency on every leg for For
	DoLoss        = "loss"         // request/reply loss for For (or until the heal)
	DoPutTaskList = "put_tasklist" // operator creates or resizes a task list
	DoDelTaskList = "delete_tasklist"
	DoDrain       = "drain"
	DoUndrain     = "undrain"
	// DoAdminDrain / DoAdminUndrain are an operator's `helix drain [--undrain] NODE`: the
	// store's flag is written by another client; the node learns of it by heartbeat.
	DoAdminDrain   = "admin_drain"
	DoAdminUndrain = "admin_undrain"
	DoJoin         = "join"  // Count new nodes start now
	DoLeave        = "leave" // graceful shutdown of the target(s)
	DoHealAll      = "heal_all"
	// DoLeaseReset is the operator's answer to a store failover that lost the last lease
	// grants: retire the coordinator lease and raise its epoch past any grant that could
	// have been lost. Whoever held it is told by its next store call (ErrFenced or
	// ErrLeaseLost) and must step down; until then S1 gives it grace.
	DoLeaseReset = "lease_reset"
	// DoStoreFault makes the store fail Applies mid-transaction for For (see Fault).
	DoStoreFault = "store_fault"
)

// Store faults (Action.Fault) and pause holds (Action.Hold).
const (
	FaultCommitThenError = "commit_then_error"
	FaultDeadlock        = "deadlock"
	HoldApply            = "apply"
	HoldRead             = "read"
)

var actionKinds = []string{DoCrash, DoRestart, DoPause, DoPartition, DoHeal, DoClock, DoStoreOutage,
	DoLatency, DoLoss, DoPutTaskList, DoDelTaskList, DoDrain, DoUndrain, DoJoin, DoLeave, DoHealAll, DoLeaseReset,
	DoAdminDrain, DoAdminUndrain, DoStoreFault}

// needTarget are the actions that act on nodes and so need a target.
var needTarget = map[string]bool{DoCrash: true, DoRestart: true, DoPause: true, DoPartition: true, DoHeal: true,
	DoClock: true, DoDrain: true, DoUndrain: true, DoLeave: true, DoAdminDrain: true, DoAdminUndrain: true}

// Swarm draws random faults per seed (swarm testing): each seed decides which of Kinds
// are on and how often, then schedules them until Until.
type Swarm struct {
	// Kinds to choose from; empty means every fault kind.
	Kinds []string `json:"kinds,omitempty"`
	// Until: no random fault starts after this time (HealAt defaults to it).
	Until Duration `json:"until"`
	// MeanInterval bounds the per-kind mean time between faults drawn per seed,
	// between MinInterval and MaxInterval (defaults 5s and 40s).
	MinInterval Duration `json:"min_interval,omitempty"`
	MaxInterval Duration `json:"max_interval,omitempty"`
	// MaxDrift bounds drawn clock drift rates (default: within the configured bound).
	MaxDrift float64 `json:"max_drift,omitempty"`
}

// SwarmKinds are the fault kinds a swarm may draw.
var SwarmKinds = []string{DoCrash, DoPause, DoPartition, DoClock, DoStoreOutage, DoLatency, DoLoss, DoDrain, DoLeave, DoJoin, DoPutTaskList, DoLeaseReset}

// Expect says what must hold.
type Expect struct {
	// Violation names an invariant the scenario is expected to break ("S3"): each seed
	// passes only if it finds that violation, and the run says so.
	Violation string `json:"violation,omitempty"`
	// NoLiveness turns off the liveness phase (L1–L4).
	NoLiveness bool `json:"no_liveness,omitempty"`
	// HealAt: when faults stop and the core is healed (default: the end of the last
	// timeline fault, or the swarm's Until).
	HealAt *Duration `json:"heal_at,omitempty"`
	// ConvergeWithin bounds L1–L4 after HealAt. Default 30s.
	ConvergeWithin Duration `json:"converge_within,omitempty"`
	// CoordinatorWithin bounds each coordinator failover: after a fault hits the
	// coordinator, some node must lead at a higher epoch within it. 0 = not checked.
	CoordinatorWithin Duration `json:"coordinator_within,omitempty"`
	// WorkerWithin bounds each worker failover: after a fault hits a worker, each of its
	// partitions must be processed again within it. 0 = not checked.
	WorkerWithin Duration `json:"worker_within,omitempty"`
	// Moves, when set, is the exact number of moves (a partition assigned again after
	// it had an owner) made from MovesAfter to the end of the run: the allocator moves
	// no more than it must, so a scenario whose minimum is known pins it, and a
	// regression in stickiness fails the scenario (invariant M1).
	Moves *int `json:"moves,omitempty"`
	// MovesAfter: moves before this virtual time are not counted (default 0: the start
	// up, while nodes register, is counted too).
	MovesAfter Duration `json:"moves_after,omitempty"`
}

// Invariants the checker knows.
var Invariants = []string{"S1", "S2", "S3", "S4", "E1", "E2", "A1", "L1", "L2", "L3", "L4", "B1", "B2", "D1", "M1"}

func verr(field, rule string) error { return engine.Invalid("scenario."+field, "", rule) }

// Validate checks the scenario and names the first bad field and its rule.
func (sc *Scenario) Validate() error {
	if sc.Name == "" {
		return verr("name", "must not be empty")
	}
	if sc.Duration <= 0 {
		return verr("duration", "must be > 0")
	}
	if len(sc.Nodes) == 0 {
		return verr("nodes", "must list at least one node group")
	}
	prefixes := map[string]bool{}
	for i, g := range sc.Nodes {
		f := fmt.Sprintf("nodes[%d]", i)
		if err := validateGroup(f, g); err != nil {
			return err
		}
		if prefixes[g.Prefix] {
			return verr(f+".prefix", fmt.Sprintf("%q is used by two groups", g.Prefix))
		}
		prefixes[g.Prefix] = true
	}
	seen := map[string]bool{}
	for i, t := range sc.TaskLists {
		if err := engine.ValidateTaskList(t.TaskList()); err != nil {
			return fmt.Errorf("scenario.tasklists[%d]: %w", i, err)
		}
		k := t.Domain + "/" + t.Name
		if seen[k] {
			return verr(fmt.Sprintf("tasklists[%d]", i), fmt.Sprintf("%s is listed twice", k))
		}
		seen[k] = true
	}
	cfg := sc.Config.EngineConfig("validate", NodeGroup{})
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("scenario.config: %w", err)
	}
	if err := validateNetwork("network", sc.Network.Latency, sc.Network.RequestLoss, sc.Network.ReplyLoss); err != nil {
		return err
	}
	for i, a := range sc.Timeline {
		if err := validateAction(fmt.Sprintf("timeline[%d]", i), a, sc.Duration.D()); err != nil {
			return err
		}
	}
	if sw := sc.Swarm; sw != nil {
		if sw.Until <= 0 || sw.Until > sc.Duration {
			return verr("swarm.until", "must be > 0 and ≤ duration")
		}
		for _, k := range sw.Kinds {
			if !slices.Contains(SwarmKinds, k) {
				return verr("swarm.kinds", fmt.Sprintf("%q is not one of %s", k, strings.Join(SwarmKinds, ", ")))
			}
		}
		if sw.MinInterval < 0 || sw.MaxInterval < 0 || (sw.MaxInterval > 0 && sw.MaxInterval < sw.MinInterval) {
			return verr("swarm.max_interval", "intervals must be ≥ 0 and max_interval ≥ min_interval")
		}
		if sw.MaxDrift < 0 || sw.MaxDrift >= 0.9 {
			return verr("swarm.max_drift", "must be in [0, 0.9)")
		}
	}
	if err := validateFailing(sc); err != nil {
		return err
	}
	e := sc.Expect
	if e.Violation != "" && !slices.Contains(Invariants, e.Violation) {
		return verr("expect.violation", fmt.Sprintf("%q is not one of %s", e.Violation, strings.Join(Invariants, ", ")))
	}
	if e.ConvergeWithin < 0 || e.CoordinatorWithin < 0 || e.WorkerWithin < 0 {
		return verr("expect", "bounds must be ≥ 0")
	}
	if e.HealAt != nil && (*e.HealAt < 0 || *e.HealAt > sc.Duration) {
		return verr("expect.heal_at", "must be within [0, duration]")
	}
	if e.Moves != nil && *e.Moves < 0 {
		return verr("expect.moves", "must be ≥ 0")
	}
	if e.Moves != nil && e.NoLiveness {
		return verr("expect.moves", "needs the liveness phase (moves are counted to its end); drop no_liveness")
	}
	if e.MovesAfter < 0 || e.MovesAfter > sc.Duration {
		return verr("expect.moves_after", "must be within [0, duration]")
	}
	return nil
}

func validateGroup(f string, g NodeGroup) error {
	if g.Prefix == "" {
		return verr(f+".prefix", "must not be empty")
	}
	if err := engine.ValidateName("scenario."+f+".prefix", g.Prefix); err != nil {
		return err
	}
	if g.Count < 1 || g.Count > 10000 {
		return verr(f+".count", "must be 1–10000")
	}
	if g.Capacity < 0 {
		return verr(f+".capacity", "must be ≥ 1 (0 means 1)")
	}
	if g.NoWork && g.NoCandidate {
		return verr(f, "no_work and no_candidate together leave the node nothing to do")
	}
	if g.Start < 0 {
		return verr(f+".start", "must be ≥ 0")
	}
	if g.Drift <= -0.9 || g.Drift >= 10 {
		return verr(f+".drift", "must be in (-0.9, 10): a clock must move forward")
	}
	return nil
}

func validateNetwork(f string, l Latency, rq, rp float64) error {
	if l.Base < 0 || l.Jitter < 0 || l.Tail < 0 {
		return verr(f+".latency", "durations must be ≥ 0")
	}
	if l.TailProb < 0 || l.TailProb > 1 {
		return verr(f+".latency.tail_prob", "must be in [0, 1]")
	}
	if rq < 0 || rq > 1 {
		return verr(f+".request_loss", "must be in [0, 1]")
	}
	if rp < 0 || rp > 1 {
		return verr(f+".reply_loss", "must be in [0, 1]")
	}
	return nil
}

func validateAction(f string, a Action, dur time.Duration) error {
	if !slices.Contains(actionKinds, a.Do) {
		return verr(f+".do", fmt.Sprintf("%q is not one of %s", a.Do, strings.Join(actionKinds, ", ")))
	}
	if a.At < 0 || a.At.D() > dur {
		return verr(f+".at", "must be within [0, duration]")
	}
	if a.For < 0 || a.Repeat < 0 || a.Every < 0 || a.Jump < 0 {
		return verr(f, "for, repeat, every and jump must be ≥ 0 (a clock never jumps backwards)")
	}
	if a.Repeat > 0 && a.Every <= 0 {
		return verr(f+".every", "must be > 0 when repeat is set")
	}
	if needTarget[a.Do] && a.Target == "" {
		return verr(f+".target", "is required for "+a.Do)
	}
	if a.Hold != "" && (a.Do != DoPause || (a.Hold != HoldApply && a.Hold != HoldRead)) {
		return verr(f+".hold", `must be "apply" or "read", and only for pause`)
	}
	if a.Permanent && (a.Do != DoCrash || a.For != 0) {
		return verr(f+".permanent", "only for crash, and not with for")
	}
	if (a.Fault != "" || a.Rate != 0) && a.Do != DoStoreFault {
		return verr(f+".fault", "fault and rate only apply to store_fault")
	}
	if a.Buffer && a.Do != DoPartition {
		return verr(f+".buffer", "only applies to partition")
	}
	switch a.Do {
	case DoStoreFault:
		if a.Fault != FaultCommitThenError && a.Fault != FaultDeadlock {
			return verr(f+".fault", `must be "commit_then_error" or "deadlock"`)
		}
		if a.Rate < 0 || a.Rate > 1 {
			return verr(f+".rate", "must be in [0, 1] (0 means 1)")
		}
		if a.For <= 0 {
			return verr(f+".for", "must be > 0 for store_fault")
		}
	case DoPause, DoStoreOutage:
		if a.For <= 0 {
			return verr(f+".for", "must be > 0 for "+a.Do)
		}
	case DoClock:
		if a.Drift == nil && a.Jump == 0 {
			return verr(f, "clock needs drift or jump")
		}
		if a.Drift != nil && (*a.Drift <= -0.9 || *a.Drift >= 10) {
			return verr(f+".drift", "must be in (-0.9, 10)")
		}
	case DoLatency:
		if a.For <= 0 {
			return verr(f+".for", "must be > 0 for latency")
		}
		if a.Latency == nil {
			return verr(f+".latency", "is required for latency")
		}
		if err := validateNetwork(f, *a.Latency, 0, 0); err != nil {
			return err
		}
	case DoLoss:
		if err := validateNetwork(f, Latency{}, a.RequestLoss, a.ReplyLoss); err != nil {
			return err
		}
	case DoPutTaskList:
		if a.TaskList == nil {
			return verr(f+".tasklist", "is required for put_tasklist")
		}
		if err := engine.ValidateTaskList(a.TaskList.TaskList()); err != nil {
			return fmt.Errorf("scenario.%s.tasklist: %w", f, err)
		}
	case DoDelTaskList:
		if a.TaskList == nil || a.TaskList.Domain == "" || a.TaskList.Name == "" {
			return verr(f+".tasklist", "domain and name are required for delete_tasklist")
		}
	case DoJoin:
		if a.Count < 1 || a.Group == nil {
			return verr(f, "join needs count ≥ 1 and group (with prefix)")
		}
		g := *a.Group
		g.Count = a.Count
		if err := validateGroup(f+".group", g); err != nil {
			return err
		}
	}
	return nil
}

// end is when the action's last effect ends (its last repetition plus For).
func (a Action) end() time.Duration {
	return a.At.D() + time.Duration(a.Repeat)*a.Every.D() + a.For.D()
}

// isFault reports whether the action is a fault (as opposed to an operator action); the
// heal time defaults to the end of the last fault.
func (a Action) isFault() bool {
	switch a.Do {
	case DoCrash, DoPause, DoPartition, DoClock, DoStoreOutage, DoLatency, DoLoss, DoStoreFault:
		return true
	}
	return false
}
