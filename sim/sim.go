package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/engine/memstore"
)

// T0 is virtual time zero: the store's clock reads T0 when a run starts. A fixed instant,
// never the wall clock.
var T0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Options tune one run. The zero value is a plain run of seed 0.
type Options struct {
	Seed uint64
	// Log, if set, receives one line per event (with the effects of each step).
	Log io.Writer
	// Timeline records a sample per virtual second for the HTML timeline.
	Timeline bool
	// ShuffleSeed seeds the order of list replies when the scenario's network has
	// ShuffleLists (or ForceShuffle is set). It is a separate stream so that, with a
	// correct engine, two shuffle seeds give the same trace.
	ShuffleSeed  uint64
	ForceShuffle bool
	// RecentEvents is how many events a violation report shows (default 30).
	RecentEvents int
	// Ref is how the replay command names the scenario (a file path for scenarios not
	// built in); default the scenario's name.
	Ref string
}

// request is one StoreRequest on its way through the simulated network.
type request struct {
	node     int32
	gen      uint32
	id       uint64
	op       engine.Op
	sentV    int64
	deadline int64 // virtual time at which the driver gives up
	nodeDL   int64 // the request's deadline on the node's clock (ns since T0)
	done     bool  // an outcome was delivered (reply or give-up)
	outcome  bool  // its fate is settled: a reply is queued, or it was given up
	value    any
	err      error
	epoch    uint64 // OpApply: fence epoch, for coverage
}

// simNode is one node: its process (an engine.Node, replaced on restart), its clock and
// its link to the store.
type simNode struct {
	idx       int32
	id        string
	group     NodeGroup
	cfg       engine.Config
	n         *engine.Node
	gen       uint32
	restarts  uint64
	up        bool // the process runs
	left      bool // shut down for good (graceful leave)
	started   bool // was ever started
	paused    bool
	buffered  []input // inputs that arrived while paused
	token     uint64  // the latest WakeAt's token
	wakeSet   bool    // a tick with the latest token is queued, at wakeV
	stale     bool    // st may lag the node's scalars (lease, liveness); Owned is current
	toldEpoch uint64  // a store reply told the node that tenures up to this epoch are over
	wakeV     int64
	pending   map[uint64]*request
	cutoff    bool       // partitioned from the store
	buffer    bool       // the partition holds messages instead of dropping them
	held      []*request // requests held by a buffering partition or a hold-pause
	holdFor   int64      // >0: a pause armed to start after the next Apply, this long
	holdKind  string     // HoldApply or HoldRead: which request starts the armed pause
	prevLive  int64      // LivenessUntil (node ns) as of the last check
	wasCoord  bool       // believed it led as of the last check

	// clock: node ns since T0 = nbase + (v − vbase)·(1+drift)
	vbase, nbase int64
	drift        float64
	lastNow      int64

	// dupOf is 1 + the index of the node whose id this process shares (duplicate,
	// replace); 0 for a node of its own. stopErr is its Stopped effect's Err.
	dupOf   int32
	stopErr error

	st       engine.NodeState
	owned    []engine.OwnedPartition // st.Owned as of the last check
	coord    bool                    // st.Coordinator as of the last check
	stepsNow int                     // steps at the current instant (livelock guard)
	stepsAt  int64
}

func (nd *simNode) clock(v int64) int64 {
	if nd.drift == 0 {
		return nd.nbase + (v - nd.vbase)
	}
	return nd.nbase + int64(float64(v-nd.vbase)*float64(1+nd.drift))
}

// toVirtual is the first virtual instant at which the node's clock reads t or later.
func (nd *simNode) toVirtual(t time.Time) int64 {
	tn := t.Sub(T0).Nanoseconds()
	if nd.drift == 0 {
		return nd.vbase + (tn - nd.nbase)
	}
	v := nd.vbase + int64(math.Ceil(float64(tn-nd.nbase)/float64(1+nd.drift)))
	for nd.clock(v) < tn {
		v++
	}
	return v
}

// before reports whether a node-clock deadline is still in the future at virtual v.
func (nd *simNode) before(v int64, t time.Time) bool {
	return nd.clock(v) < t.Sub(T0).Nanoseconds()
}

// fresh re-reads the node's State if a step left it stale (see step).
func (nd *simNode) fresh() {
	if nd.stale {
		nd.stale = false
		if nd.up {
			nd.st = nd.n.State()
		}
	}
}

// believesCoordinator is S1's belief: the process runs, its state says it leads, and
// its own clock has not reached its (conservative) lease end.
func (nd *simNode) believesCoordinator(v int64) bool {
	nd.fresh()
	return nd.coordRaw(v)
}

func (nd *simNode) coordRaw(v int64) bool {
	return nd.up && nd.st.Coordinator && nd.before(v, nd.st.LeaseUntil)
}

// inGrace: an operator's lease reset revoked the node's tenure (including one whose
// grant was still on its way back) and no store reply has told it yet; it cannot know,
// so S1 does not count its belief. Fencing (S2) is what protects the store meanwhile.
func (s *Sim) inGrace(nd *simNode) bool {
	return nd.st.Epoch <= s.revokedUpTo && nd.st.Epoch > nd.toldEpoch
}

// live is S3's condition for processing: the process runs and its own clock has not
// reached its liveness deadline.
func (nd *simNode) live(v int64) bool {
	nd.fresh()
	return nd.liveRaw(v)
}

func (nd *simNode) liveRaw(v int64) bool {
	return nd.up && nd.before(v, nd.st.LivenessUntil)
}

type tlKey struct{ domain, name string }

type spike struct {
	lat      Latency
	req, rep float64
	node     int32 // -1: every node
}

// Sim is one simulation run: one thread, virtual time, one seeded PRNG per component.
type Sim struct {
	sc     *Scenario
	opt    Options
	seed   uint64
	now    int64
	end    int64
	healAt int64
	seq    uint64
	q      queue
	nodes  []*simNode
	byID   map[string]int32
	pcount map[string]int // nodes created per prefix

	store    *memstore.Store
	ctx      context.Context
	netRng   *rand.Rand
	faultRng *rand.Rand
	shuffle  *rand.Rand
	outage   int
	spikes   []*spike
	healed   bool
	hash     hasher
	nEvents  uint64
	ring     *ring
	cur      rec // the event being processed
	viol     *Violation
	steps    uint64
	cov      map[string]int
	evCov    map[string]int
	check    checker
	metrics  metrics
	tl       *Timeline

	tls         []engine.TaskList // configured task lists, as the store has them
	tlCount     map[tlKey]int
	rows        map[engine.PartitionID]engine.Assignment // the store's rows, kept in sync
	rowRev      uint64
	endPhase    int
	steadyRev   uint64
	deadInc     map[string]uint64 // highest dead incarnation per node id
	revokedUpTo uint64            // operator lease resets revoked every epoch up to this

	// healDefault: the heal time was derived from the faults (no expect.heal_at), so a
	// fault that turns out to last longer moves it; healGen tags the heal and end
	// events of the current heal time (a move supersedes the queued ones).
	healDefault bool
	healGen     uint32
	storeFaults []*storeFault // store_fault actions in force
}

// newRand is one component's PRNG: the run's seed, split by a per-component stream id.
func newRand(seed, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, splitmix(seed^splitmix(stream))))
}

// New builds a run of sc with the options' seed. The scenario must be valid.
func New(sc *Scenario, opt Options) (*Sim, error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	s := &Sim{
		sc:       sc,
		opt:      opt,
		seed:     opt.Seed,
		byID:     map[string]int32{},
		pcount:   map[string]int{},
		ctx:      context.Background(),
		netRng:   newRand(opt.Seed, 0x6e6574),
		faultRng: newRand(opt.Seed, 0x6661756c74),
		shuffle:  newRand(opt.ShuffleSeed, 0x73687566),
		cov:      map[string]int{},
		evCov:    map[string]int{},
		hash:     fnvOffset,
	}
	s.metrics.init()
	n := opt.RecentEvents
	if n <= 0 {
		n = 30
	}
	s.ring = newRing(n)
	s.check.init()
	s.store = memstore.New(func() time.Time { return T0.Add(time.Duration(s.now)) })
	for _, t := range sc.TaskLists {
		if _, err := s.store.PutTaskList(s.ctx, t.TaskList()); err != nil {
			return nil, fmt.Errorf("scenario.tasklists: %w", err)
		}
	}
	s.syncTaskLists()
	s.syncRows()
	for _, g := range sc.Nodes {
		for i := 0; i < g.Count; i++ {
			s.addNode(g, g.Start.D())
		}
	}

	// Timeline: expand repeats, then the swarm's random faults.
	var acts []Action
	for _, a := range sc.Timeline {
		for r := 0; r <= a.Repeat; r++ {
			b := a
			b.At = Duration(a.At.D() + time.Duration(r)*a.Every.D())
			b.Repeat = 0
			acts = append(acts, b)
		}
	}
	if sc.Swarm != nil {
		acts = append(acts, s.drawSwarm(sc.Swarm)...)
	}
	heal := time.Duration(0)
	for _, a := range acts {
		if a.isFault() {
			heal = max(heal, a.end())
		}
	}
	if sc.Swarm != nil {
		heal = max(heal, sc.Swarm.Until.D())
	}
	if sc.Expect.HealAt != nil {
		heal = sc.Expect.HealAt.D()
	}
	s.healAt = int64(heal)
	s.end = s.endFor(s.healAt)
	for i := range acts {
		a := acts[i]
		if int64(a.At) > s.end {
			continue
		}
		s.push(event{at: int64(a.At), kind: evAction, act: &a})
	}
	if !sc.Expect.NoLiveness {
		s.push(event{at: s.healAt, kind: evHeal})
		s.push(event{at: s.end - int64(steadyWindow), kind: evEnd})
	}
	s.healDefault = sc.Expect.HealAt == nil
	if opt.Timeline {
		s.tl = &Timeline{Scenario: sc.Name, Seed: opt.Seed}
	}
	s.push(event{at: 0, kind: evSample})
	return s, nil
}

// endFor is the run's end when the heal is at healAt: the scenario's duration, extended
// to leave the liveness phase its bound and the steady window.
func (s *Sim) endFor(healAt int64) int64 {
	end := int64(s.sc.Duration)
	if !s.sc.Expect.NoLiveness {
		end = max(end, healAt+int64(s.convergeWithin())+int64(steadyWindow))
	}
	return end
}

// healNoEarlierThan moves a default heal time later when a fault turns out to last past
// it: a pause armed with hold starts at the node's next Apply, later than its nominal
// time, so its real end is known only when it starts. The heal and end events already
// queued are superseded (events carry the heal generation they belong to).
func (s *Sim) healNoEarlierThan(t int64) {
	if !s.healDefault || s.healed || s.sc.Expect.NoLiveness || t <= s.healAt {
		return
	}
	s.healAt = t
	s.end = max(s.end, s.endFor(t))
	s.healGen++
	s.cover("heal_moved_by_late_fault")
	s.push(event{at: s.healAt, kind: evHeal, gen: s.healGen})
	s.push(event{at: s.endFor(t) - int64(steadyWindow), kind: evEnd, gen: s.healGen})
}

// steadyWindow is how long the cluster must stay unchanged at the end for L4.
const steadyWindow = 5 * time.Second

func (s *Sim) convergeWithin() time.Duration {
	if d := s.sc.Expect.ConvergeWithin.D(); d > 0 {
		return d
	}
	return 30 * time.Second
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func (s *Sim) push(e event) {
	s.seq++
	e.seq = s.seq
	s.q.push(e)
}

func (s *Sim) addNode(g NodeGroup, start time.Duration) *simNode {
	s.pcount[g.Prefix]++
	id := g.Prefix + strconv.Itoa(s.pcount[g.Prefix])
	nd := &simNode{
		idx:     int32(len(s.nodes)),
		id:      id,
		group:   g,
		cfg:     s.sc.Config.EngineConfig(id, g),
		pending: map[uint64]*request{},
		drift:   g.Drift,
		nbase:   int64(g.ClockOffset),
		// A clock may start behind the store's (a negative offset): no floor at zero.
		lastNow: math.MinInt64,
	}
	s.nodes = append(s.nodes, nd)
	s.byID[id] = nd.idx
	s.push(event{at: max(int64(start), s.now), kind: evStart, node: nd.idx, gen: nd.gen})
	return nd
}

// Now is the current virtual time.
func (s *Sim) Now() time.Duration { return time.Duration(s.now) }

// End is the virtual time the run ends.
func (s *Sim) End() time.Duration { return time.Duration(s.end) }

// Violation is the first violation found, or nil.
func (s *Sim) Violation() *Violation { return s.viol }

// Run runs to the end (or the first violation) and returns the result.
func (s *Sim) Run() *Result {
	for {
		end := s.end
		s.RunUntil(time.Duration(end))
		if s.viol != nil || s.end == end { // the end may move while running (healNoEarlierThan)
			break
		}
	}
	return s.Result()
}

// RunUntil processes events up to virtual time t, stopping early at a violation.
func (s *Sim) RunUntil(t time.Duration) {
	lim := int64(t)
	for s.q.len() > 0 && s.viol == nil {
		if s.q.peek() > lim {
			break
		}
		s.runEvent(s.q.pop())
	}
	if s.viol == nil && s.now < lim {
		s.now = lim
	}
}

// runEvent processes one event at its time; a violation it finds keeps the last events.
func (s *Sim) runEvent(e event) {
	s.now = e.at
	s.nEvents++
	s.dispatch(e)
	if s.viol != nil && s.viol.Recent == nil {
		s.viol.Recent = s.ring.lines()
	}
}

func (s *Sim) begin(e event, what string) {
	s.cur = rec{seq: s.nEvents, at: e.at, kind: e.kind, what: what}
	if e.kind == evStart || e.kind == evTick || e.kind == evReply || e.kind == evResume || e.kind == evArrive {
		s.cur.node = s.nodes[e.node].id
	}
	s.hash.u64(uint64(e.at))
	s.hash.u64(uint64(e.kind))
	s.hash.u64(uint64(e.node))
}

func (s *Sim) finish() {
	s.hash.rec(&s.cur)
	s.ring.add(s.cur)
	if s.opt.Log != nil {
		fmt.Fprintln(s.opt.Log, s.cur.String())
	}
}

func (s *Sim) dispatch(e event) {
	switch e.kind {
	case evStart:
		nd := s.nodes[e.node]
		s.begin(e, "")
		if !nd.up && !nd.left && nd.gen == e.gen {
			s.startNode(nd)
		} else {
			s.cur.note = "ignored"
		}
		s.finish()
	case evTick:
		nd := s.nodes[e.node]
		if nd.gen != e.gen || !nd.up || e.token != nd.token {
			return // stale wake-up: not an event of the run
		}
		s.begin(e, "")
		nd.wakeSet = false
		if nd.paused {
			s.cur.note = "paused" // resume ticks it
		} else {
			s.step(nd, engine.Tick{}, refreshNone)
		}
		s.finish()
	case evArrive:
		s.begin(e, "")
		s.cur.op, s.cur.id = e.req.op.Name(), e.req.id
		s.arrive(e.req)
		s.finish()
	case evReply:
		s.begin(e, "")
		s.cur.op, s.cur.id = e.req.op.Name(), e.req.id
		s.reply(e.req)
		s.finish()
	case evAction:
		s.begin(e, e.act.Do+" "+e.act.Target)
		s.action(e.act)
		s.finish()
	case evUndo:
		s.begin(e, "end of fault")
		e.undo(s)
		s.finish()
	case evResume:
		nd := s.nodes[e.node]
		s.begin(e, "resume")
		if nd.gen == e.gen && nd.up && nd.paused {
			s.resume(nd)
		}
		s.finish()
	case evSample:
		s.sample()
		if s.now+int64(time.Second) <= s.end {
			s.push(event{at: s.now + int64(time.Second), kind: evSample})
		}
	case evHeal:
		if e.gen != s.healGen {
			return // superseded by a later heal time
		}
		s.begin(e, "heal: faults stop, the core is healed")
		s.heal()
		s.finish()
	case evProbe:
		s.probe(e)
	case evEnd:
		if e.gen != s.healGen {
			return
		}
		s.begin(e, "liveness check")
		s.endCheck()
		s.finish()
	case evFail:
		s.deliverFailure(e)
	}
}

// startNode starts a (new or restarted) process for nd: a fresh engine.Node with the
// same id and an empty memory. What the previous process left (pause, wake-up, pending
// requests, buffered inputs, state) nodeDown has already cleared.
func (s *Sim) startNode(nd *simNode) {
	seed := splitmix(s.seed ^ splitmix(uint64(nd.idx)+1) ^ splitmix(nd.restarts<<32))
	n, err := engine.NewNode(processConfig(nd, seed), seed)
	if err != nil {
		s.fail("config", fmt.Sprintf("node %s: %v", nd.id, err))
		return
	}
	if nd.started {
		nd.restarts++
		s.cover("node_restarted")
	}
	nd.started = true
	nd.n = n
	nd.up = true
	nd.gen++
	s.step(nd, engine.Tick{}, refreshEager)
}

// nodeTime is the node's clock at the current virtual instant, never going backwards.
func (s *Sim) nodeTime(nd *simNode) time.Time {
	c := nd.clock(s.now)
	if c < nd.lastNow {
		c = nd.lastNow
	}
	nd.lastNow = c
	return T0.Add(time.Duration(c))
}

// Refresh modes of step.
const (
	refreshNone  = 0 // a Tick: beliefs change only with an effect
	refreshLazy  = 1 // a reply that may extend the lease or liveness
	refreshEager = 2 // operator inputs, restarts
)

// step feeds one input to a node, carries out its effects, then checks the invariants
// that the node's new beliefs could break.
//
// Reading State sorts the node's partitions, and reading it after every step was half
// of the simulator's allocations, so it is read only when beliefs may have changed: at
// once after an effect that starts or stops a partition or reports an event (every role
// change emits one) and after operator inputs; lazily (marked stale, read when another
// check first looks at this node) after a reply that extends a lease or liveness the
// node still held — an extension cannot create a conflict by itself, only the next
// claim by someone else can, and that check reads this node's state first. A reply that
// revives a belief that had run out is checked at once.
func (s *Sim) step(nd *simNode, in engine.Input, mode int) {
	refresh := mode == refreshEager
	if nd.stepsAt != s.now {
		nd.stepsAt, nd.stepsNow = s.now, 0
	}
	nd.stepsNow++
	if nd.stepsNow > 10000 {
		s.fail("livelock", fmt.Sprintf("node %s stepped 10000 times at one instant", nd.id))
		return
	}
	s.steps++
	effs := nd.n.Step(s.nodeTime(nd), in)
	if s.opt.Log != nil {
		s.cur.effs += describeEffects(effs, nd.toVirtual)
	}
	for _, e := range effs {
		s.hash.effect(e)
		switch e := e.(type) {
		case engine.StoreRequest:
			apply, isApply := e.Op.(engine.OpApply)
			if isApply {
				s.checkApplyInWindow(nd, apply)
			}
			if nd.holdFor > 0 && !nd.paused {
				_, isRead := e.Op.(engine.OpReadState)
				switch {
				case isApply && nd.holdKind == HoldApply:
					// The armed pause starts now: the Apply stays in the process.
					s.cover("pause_between_decision_and_write")
					nd.held = append(nd.held, s.newRequest(nd, e))
					s.pause(nd, time.Duration(nd.holdFor))
					s.healNoEarlierThan(s.now + nd.holdFor)
					nd.holdFor = 0
					continue
				case isRead && nd.holdKind == HoldRead:
					// The read goes out; the pause starts with it in flight, so its
					// reply waits for the node to resume.
					s.cover("pause_with_read_in_flight")
					s.send(nd, e)
					s.pause(nd, time.Duration(nd.holdFor))
					s.healNoEarlierThan(s.now + nd.holdFor)
					nd.holdFor = 0
					continue
				}
			}
			s.send(nd, e)
		case engine.WakeAt:
			at := max(nd.toVirtual(e.At), s.now)
			if nd.wakeSet && nd.wakeV == at {
				continue // the tick already queued for that instant will do
			}
			nd.token++
			nd.wakeSet, nd.wakeV = true, at
			s.push(event{at: at, kind: evTick, node: nd.idx, gen: nd.gen, token: nd.token})
		case engine.StopPartition:
			refresh = true
			s.cov[stopNames[e.Reason]]++
		case engine.StartPartition:
			refresh = true
			s.scheduleFailure(nd, e)
		case engine.Event:
			if !quietEvents[e.Kind] {
				refresh = true
			} else if mode == refreshNone {
				mode = refreshLazy
			}
			s.evCov[e.Kind]++
		case engine.Stopped:
			refresh = true
			s.cover("graceful_shutdown_completed")
			nd.left = true
			nd.stopErr = e.Err
			s.nodeDown(nd)
		}
	}
	if !refresh && mode == refreshLazy {
		if (len(nd.owned) > 0 && !nd.liveRaw(s.now)) || (nd.st.Coordinator && !nd.coordRaw(s.now)) || nd.st.Incarnation == 0 {
			refresh = true
		} else {
			nd.stale = true
		}
	}
	if !refresh {
		return
	}
	nd.stale = false
	if nd.up {
		nd.st = nd.n.State()
	}
	s.checkNode(nd)
}

// quietEvents report work done, not a change of role: they alone do not make the
// state worth reading at once.
var quietEvents = map[string]bool{"applied": true, "apply_failed": true, "shutdown_call_failed": true, "register_failed": true,
	"release_acked": true, "declared_dead": true}

var stopNames = map[engine.StopReason]string{
	engine.StopReleased: "stop_released", engine.StopSelfFenced: "stop_self_fenced", engine.StopNodeDead: "stop_node_dead",
	engine.StopShutdown: "stop_shutdown", engine.StopRevoked: "stop_revoked", engine.StopFailed: "stop_failed",
}

// refreshes is the refresh mode for a reply to op: lazy if it can change the node's
// beliefs silently (extend its lease or its liveness).
func refreshes(op engine.Op) int {
	switch op.(type) {
	case engine.OpRenewLease, engine.OpAcquireLease, engine.OpHeartbeat, engine.OpRegisterNode:
		return refreshLazy
	}
	return refreshNone
}

// nodeDown ends a node's process: nothing it believed counts any more.
func (s *Sim) nodeDown(nd *simNode) {
	nd.up = false
	nd.gen++
	nd.paused = false
	nd.wakeSet = false
	nd.buffered = nil
	nd.held = nil
	nd.holdFor = 0
	nd.pending = map[uint64]*request{}
	nd.st = engine.NodeState{ID: nd.id}
	nd.stale = false
	nd.wasCoord = false
	s.check.dropNode(s, nd)
}

var errRefused = fmt.Errorf("%w: connection refused (simulated store outage)", engine.ErrUnavailable)

// latency draws the delay of one leg of node n's link.
func (s *Sim) latency(n int32) int64 {
	d := s.draw(s.sc.Network.Latency)
	for _, sp := range s.spikes {
		if sp.node < 0 || sp.node == n {
			d += s.draw(sp.lat)
		}
	}
	return max(d, 1)
}

func (s *Sim) draw(l Latency) int64 {
	d := int64(l.Base)
	if l.Jitter > 0 {
		d += int64(s.netRng.ExpFloat64() * float64(l.Jitter))
	}
	if l.TailProb > 0 && l.Tail > 0 && s.netRng.Float64() < l.TailProb {
		d += s.netRng.Int64N(int64(l.Tail))
	}
	return d
}

func (s *Sim) lossRates(n int32) (req, rep float64) {
	req, rep = s.sc.Network.RequestLoss, s.sc.Network.ReplyLoss
	if s.healed {
		return 0, 0
	}
	for _, sp := range s.spikes {
		if sp.node < 0 || sp.node == n {
			req, rep = max(req, sp.req), max(rep, sp.rep)
		}
	}
	return
}

// newRequest records a request the node just emitted: pending until its outcome, and,
// for an Apply, in flight for the checker.
func (s *Sim) newRequest(nd *simNode, r engine.StoreRequest) *request {
	req := &request{node: nd.idx, gen: nd.gen, id: r.ID, op: r.Op, sentV: s.now, deadline: max(nd.toVirtual(r.Deadline), s.now), nodeDL: r.Deadline.Sub(T0).Nanoseconds()}
	if a, ok := r.Op.(engine.OpApply); ok {
		req.epoch = a.Batch.Fence.Epoch
		s.check.applySent(req)
	}
	nd.pending[r.ID] = req
	return req
}

func (s *Sim) send(nd *simNode, r engine.StoreRequest) {
	req := s.newRequest(nd, r)
	lq, _ := s.lossRates(nd.idx)
	if nd.cutoff && nd.buffer {
		nd.held = append(nd.held, req)
		s.cover("request_held_by_partition")
		return
	}
	if nd.cutoff {
		s.cover("request_dropped_partitioned")
		s.giveUpLater(req)
		return
	}
	if lq > 0 && s.netRng.Float64() < lq {
		s.cover("request_lost")
		s.giveUpLater(req)
		return
	}
	s.push(event{at: s.now + s.latency(nd.idx), kind: evArrive, node: nd.idx, gen: nd.gen, req: req})
}

// giveUpLater marks a request whose reply will never come. The node times its requests
// out by itself at their deadline (it asks for a WakeAt at each), exactly as the
// production driver's context deadline would; nothing needs to be delivered.
func (s *Sim) giveUpLater(req *request) {
	if req.outcome {
		return
	}
	req.outcome = true
	req.done = true
	delete(s.nodes[req.node].pending, req.id)
	s.check.applyGone(req)
}

func isWrite(op engine.Op) bool {
	switch op.(type) {
	case engine.OpApply, engine.OpAckRelease, engine.OpGiveBack, engine.OpRegisterNode, engine.OpDeregisterNode,
		engine.OpAcquireLease, engine.OpRenewLease, engine.OpReleaseLease, engine.OpUpdateNode, engine.OpHeartbeat:
		return true
	}
	return false
}

// arrive executes a request at the store (unless the node is cut off or the store is out),
// then sends the reply back, or loses it.
func (s *Sim) arrive(req *request) {
	nd := s.nodes[req.node]
	if nd.cutoff && nd.buffer {
		nd.held = append(nd.held, req)
		s.cur.note = "held: partitioned"
		return
	}
	if nd.cutoff {
		s.cur.note = "dropped: partitioned"
		s.cover("request_dropped_partitioned")
		s.giveUpLater(req)
		return
	}
	if s.outage > 0 {
		s.cover("store_outage_hit")
		if s.faultRng.IntN(2) == 0 {
			s.cur.note = "store down: no answer"
			s.giveUpLater(req)
			return
		}
		s.cur.note = "store down: refused"
		req.value, req.err = nil, errRefused
		s.replyLater(req)
		return
	}
	s.check.applyGone(req)
	if req.sentV < s.now-int64(nd.cfg.RequestTimeout) {
		s.cover("request_applied_after_client_deadline")
	}
	v, err := s.execute(req)
	req.value, req.err = v, err
	s.hash.u64(boolU(err == nil))
	if err != nil {
		s.cur.res = errName(err)
	} else {
		s.cur.res = "ok"
	}
	_, lp := s.lossRates(req.node)
	if lp > 0 && s.netRng.Float64() < lp {
		if err == nil && isWrite(req.op) {
			s.cover("ambiguous_write")
		}
		s.cur.note = "reply lost"
		s.giveUpLater(req)
		return
	}
	s.replyLater(req)
}

func (s *Sim) replyLater(req *request) {
	at := s.now + s.latency(req.node)
	if at >= req.deadline {
		// The driver abandons the call at its deadline: a later reply is never delivered.
		s.cover("reply_after_deadline")
		s.giveUpLater(req)
		return
	}
	req.outcome = true
	s.push(event{at: at, kind: evReply, node: req.node, gen: req.gen, req: req})
}

func boolU(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// errName classifies a store error for logs and coverage.
func errName(err error) string {
	for _, e := range []error{engine.ErrFenced, engine.ErrLeaseHeld, engine.ErrLeaseLost, engine.ErrNodeDead,
		engine.ErrConflict, engine.ErrNotFound, engine.ErrInvalid, engine.ErrUnavailable} {
		if errors.Is(err, e) {
			s := e.Error()
			if i := strings.IndexByte(s, ':'); i > 0 {
				s = s[:i]
			}
			return s
		}
	}
	return err.Error()
}

// execute runs a request against the store, with the checks that need the store's state
// at that very instant (S2 needs the lease's epoch at apply time).
func (s *Sim) execute(req *request) (any, error) {
	switch op := req.op.(type) {
	case engine.OpApply:
		lr, lerr := s.store.ReadLease(s.ctx, op.Batch.Fence.Key)
		// The checker judges the fence itself rather than through engine helpers, so a
		// bug planted in those cannot blind it.
		fenceOK := lerr == nil && lr.Lease.Epoch == op.Batch.Fence.Epoch && lr.Lease.Status == engine.LeaseActive && lr.Now.Before(lr.Lease.ExpiresAt)
		var before []engine.NodeInfo
		if fenceOK { // a fenced batch is refused whole: nothing in it to check
			s.check.beforeApply(s, req, op.Batch)
			if len(op.Batch.Dead) > 0 {
				if r, err := s.store.ListNodes(s.ctx); err == nil {
					before = r.Nodes
				}
			}
		}
		if f := s.storeFault(); f == FaultDeadlock {
			// A deadlock part-way through the batch: the transaction is rolled back
			// whole, and the client is told to retry.
			s.cover("apply_deadlock_rolled_back")
			s.check.atomic(s, op.Batch, before)
			return nil, errDeadlock
		}
		v, err := op.Do(s.ctx, s.store)
		if err != nil {
			s.check.atomic(s, op.Batch, before)
		}
		if err == nil && len(before) > 0 {
			s.check.declaredDead(s, op.Batch, before)
		}
		if err == nil {
			if !fenceOK {
				s.fail("S2", fmt.Sprintf("store accepted a write from %s fenced with epoch %d while the lease %q is at epoch %d held by %q until %s (store now %s)",
					s.nodes[req.node].id, op.Batch.Fence.Epoch, op.Batch.Fence.Key, lr.Lease.Epoch, lr.Lease.Owner,
					fmtV(lr.Lease.ExpiresAt.Sub(T0).Nanoseconds()), fmtV(s.now)))
			}
			s.check.afterApply(s, op.Batch)
			s.syncRows()
			s.probeStaleAcks(op.Batch)
			if s.storeFault() == FaultCommitThenError {
				// Committed, but the connection died before the reply: the client gets an
				// error although every change of the batch is in.
				s.cover("apply_committed_then_error")
				return nil, errAfterCommit
			}
		} else if errors.Is(err, engine.ErrFenced) {
			s.cover("fenced_write_rejected")
		} else if errors.Is(err, engine.ErrConflict) {
			s.cover("apply_conflict")
		}
		return v, err
	case engine.OpAckRelease:
		row, had := s.rows[op.Ack.Partition]
		v, err := op.Do(s.ctx, s.store)
		if err == nil {
			a := op.Ack
			if !had || row.State != engine.Releasing || row.Owner != a.Node || row.Incarnation != a.Incarnation || row.Generation != a.Generation {
				s.fail("S3", fmt.Sprintf("the store accepted %s/%d's acknowledgement of %s at generation %d while the row is %s by %s/%d at generation %d: only the owner of the generation being released may acknowledge it",
					a.Node, a.Incarnation, a.Partition, a.Generation, row.State, row.Owner, row.Incarnation, row.Generation))
			}
			s.syncRows()
		} else if errors.Is(err, engine.ErrNodeDead) {
			s.cover("release_ack_after_death")
		}
		return v, err
	case engine.OpAcquireLease, engine.OpRenewLease, engine.OpReleaseLease:
		_, isRenew := op.(engine.OpRenewLease)
		before, berr := s.store.ReadLease(s.ctx, s.nodes[req.node].cfg.LeaseKey)
		held := berr == nil && before.Lease.Status == engine.LeaseActive && before.Now.Before(before.Lease.ExpiresAt)
		v, err := op.Do(s.ctx, s.store)
		if lr, ok := v.(engine.LeaseReply); ok && err == nil {
			s.check.epochRules(s, op, before.Lease, berr == nil, held, lr.Lease)
			if lr.Lease.Status == engine.LeaseActive {
				s.probeLeaseAt(lr.Lease.ExpiresAt)
			}
		}
		if isRenew && err == nil && berr == nil && !held {
			// A tenure that expired must stay over: from its expiry on, any node may
			// have taken the lease as free (and acted on it); reviving the old epoch
			// lets two tenures overlap.
			s.fail("S1", fmt.Sprintf("the store renewed %s's lease at epoch %d after it had expired at %s (store now %s)",
				s.nodes[req.node].id, before.Lease.Epoch, fmtT(before.Lease.ExpiresAt), fmtV(s.now)))
		}
		if lr, ok := v.(engine.LeaseReply); ok && err == nil {
			s.check.leaseEpoch(s, lr.Lease.Epoch)
		}
		if err != nil && errors.Is(err, engine.ErrLeaseLost) {
			s.cover("lease_lost")
		}
		return v, err
	case engine.OpRegisterNode, engine.OpDeregisterNode:
		v, err := op.Do(s.ctx, s.store)
		if err == nil {
			s.syncRows()
			if r, ok := v.(engine.RegisterReply); ok {
				s.markDead(op.(engine.OpRegisterNode).Spec.ID, r.Incarnation-1)
			}
			if d, ok := op.(engine.OpDeregisterNode); ok {
				s.markDead(d.ID, d.Incarnation)
			}
		}
		return v, err
	case engine.OpHeartbeat:
		v, err := op.Do(s.ctx, s.store)
		if err != nil && errors.Is(err, engine.ErrNodeDead) {
			s.cover("heartbeat_refused_dead")
		}
		if err == nil && op.Incarnation <= s.deadInc[op.ID] {
			// DESIGN: a dead incarnation's late heartbeat is refused; everything it owned
			// is void and has moved. Accepting it tells a node whose partitions were
			// given away that it is alive.
			s.fail("S3", fmt.Sprintf("the store accepted a heartbeat from %s/%d, an incarnation that is dead (declared, replaced or deregistered)", op.ID, op.Incarnation))
		}
		return v, err
	case engine.OpGiveBack:
		v, err := op.Do(s.ctx, s.store)
		if err == nil {
			s.cover("given_back")
			s.syncRows()
		}
		return v, err
	default:
		return op.Do(s.ctx, s.store)
	}
}

func (s *Sim) reply(req *request) {
	nd := s.nodes[req.node]
	if nd.gen != req.gen || !nd.up || req.done {
		s.cur.note = "dropped: process gone"
		return
	}
	req.done = true
	delete(nd.pending, req.id)
	if nd.cutoff {
		s.cur.note = "dropped: partitioned"
		s.cover("reply_dropped_partitioned")
		return
	}
	if nd.paused {
		nd.buffered = append(nd.buffered, input{req: req})
		s.cur.note = "buffered: paused"
		return
	}
	s.deliver(nd, req)
}

// input is an input waiting for a paused node: a reply (req) or an operator's input.
type input struct {
	req *request
	in  engine.Input
}

// deliver steps a node with a request's outcome.
func (s *Sim) deliver(nd *simNode, req *request) {
	if s.revokedUpTo != 0 && nd.clock(s.now) < req.nodeDL && req.err != nil && (errors.Is(req.err, engine.ErrFenced) || errors.Is(req.err, engine.ErrLeaseLost)) {
		// The node now learns that its tenure was revoked by an operator (unless the
		// request timed out meanwhile: the node ignores a reply after its deadline).
		switch op := req.op.(type) {
		case engine.OpApply:
			nd.toldEpoch = max(nd.toldEpoch, op.Batch.Fence.Epoch)
		case engine.OpRenewLease:
			nd.toldEpoch = max(nd.toldEpoch, op.Epoch)
		}
	}
	s.step(nd, engine.StoreReply{ID: req.id, Value: s.maybeShuffle(req.value), Err: req.err}, refreshes(req.op))
}

// maybeShuffle returns a list reply with its lists in a random order (a store without
// ORDER BY), drawn from the shuffle stream.
func (s *Sim) maybeShuffle(v any) any {
	if !s.sc.Network.ShuffleLists && !s.opt.ForceShuffle {
		return v
	}
	switch r := v.(type) {
	case engine.StateReply:
		r.Nodes = shuffled(s.shuffle, r.Nodes)
		r.TaskLists = shuffled(s.shuffle, r.TaskLists)
		r.Assignments = shuffled(s.shuffle, r.Assignments)
		return r
	case engine.NodesReply:
		r.Nodes = shuffled(s.shuffle, r.Nodes)
		return r
	case engine.AssignmentsReply:
		r.Assignments = shuffled(s.shuffle, r.Assignments)
		return r
	case engine.HeartbeatReply:
		r.Assignments = shuffled(s.shuffle, r.Assignments)
		r.Incoming = shuffled(s.shuffle, r.Incoming)
		return r
	}
	return v
}

// shuffled is a copy of xs in an order drawn from rng (the reply's own slice is the
// store's and stays as it is).
func shuffled[T any](rng *rand.Rand, xs []T) []T {
	xs = slices.Clone(xs)
	rng.Shuffle(len(xs), func(i, j int) { xs[i], xs[j] = xs[j], xs[i] })
	return xs
}

// markDead records that incarnations of id up to inc are dead for good.
func (s *Sim) markDead(id string, inc uint64) {
	if s.deadInc == nil {
		s.deadInc = map[string]uint64{}
	}
	s.deadInc[id] = max(s.deadInc[id], inc)
}

// cover counts one occurrence of an interesting state or fault.
func (s *Sim) cover(name string) { s.cov[name]++ }

// fail records the first violation; the run stops after the current event.
func (s *Sim) fail(inv, msg string) {
	if s.viol != nil {
		return
	}
	s.viol = &Violation{
		Scenario:  s.sc.Name,
		Seed:      s.seed,
		Event:     s.nEvents,
		At:        time.Duration(s.now),
		Invariant: inv,
		Message:   msg,
	}
	s.viol.Expected = s.sc.Expect.Violation == inv
	s.viol.Ref = s.opt.Ref
	if s.tl != nil {
		s.tl.Violations = append(s.tl.Violations, Mark{At: time.Duration(s.now), Invariant: inv, Message: msg})
	}
	s.cur.what += " !! " + inv
}
