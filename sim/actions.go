package sim

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/helixcoord/helix/engine"
)

// Inject carries out an action now, outside the timeline (the rapid test's actions).
func (s *Sim) Inject(a Action) error {
	if err := validateAction("action", a, time.Duration(1<<62)); err != nil {
		return err
	}
	a.At = Duration(s.now)
	s.runEvent(event{at: s.now, kind: evAction, act: &a})
	return nil
}

// HealAndCheck starts the liveness phase now: faults stop and the core is healed, then
// L1–L3 must hold within the given bound and L4 (no further change) for a while after.
// It returns the first violation (of any invariant) found meanwhile.
func (s *Sim) HealAndCheck(within time.Duration) *Violation {
	if s.viol != nil {
		return s.viol
	}
	s.healGen++ // supersedes any heal already queued
	s.push(event{at: s.now, kind: evHeal, gen: s.healGen})
	s.push(event{at: s.now + int64(within), kind: evEnd, gen: s.healGen})
	s.RunUntil(time.Duration(s.now) + within + steadyWindow)
	return s.viol
}

// upNodes lists the nodes whose process runs, in index order.
func (s *Sim) upNodes() []*simNode {
	var out []*simNode
	for _, nd := range s.nodes {
		if nd.up {
			out = append(out, nd)
		}
	}
	return out
}

// coordinator is the node that believes it leads now, else the lease holder in the store.
func (s *Sim) coordinator() *simNode {
	for _, i := range s.check.coords {
		if nd := s.nodes[i]; nd.believesCoordinator(s.now) {
			return nd
		}
	}
	if lr, err := s.store.ReadLease(s.ctx, s.nodes[0].cfg.LeaseKey); err == nil && lr.Lease.HeldAt(lr.Now) {
		if i, ok := s.byID[engine.OwnerNodeID(lr.Lease.Owner)]; ok {
			return s.nodes[i]
		}
	}
	return nil
}

// targets resolves an action's Target to nodes (deterministically: random choices come
// from the fault stream).
func (s *Sim) targets(t string) []*simNode {
	up := s.upNodes()
	pick := func(c []*simNode) []*simNode {
		if len(c) == 0 {
			return nil
		}
		return []*simNode{c[s.faultRng.IntN(len(c))]}
	}
	switch {
	case t == "coordinator":
		if c := s.coordinator(); c != nil {
			return []*simNode{c}
		}
		return nil
	case t == "worker":
		c := s.coordinator()
		var w []*simNode
		for _, nd := range up {
			if nd != c && !nd.cfg.NoWork && !nd.paused {
				w = append(w, nd)
			}
		}
		return pick(w)
	case t == "random":
		return pick(up)
	case t == "all":
		return slices.Clone(s.nodes)
	case t == "half":
		c := slices.Clone(up)
		s.faultRng.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
		c = c[:len(c)/2]
		slices.SortFunc(c, func(a, b *simNode) int { return int(a.idx - b.idx) })
		return c
	case t == "crashed":
		var out []*simNode
		for _, nd := range s.nodes {
			if !nd.up && !nd.left && nd.started {
				out = append(out, nd)
			}
		}
		return out
	case strings.HasPrefix(t, "prefix:"):
		var out []*simNode
		for _, nd := range s.nodes {
			if nd.group.Prefix == t[len("prefix:"):] {
				out = append(out, nd)
			}
		}
		return out
	}
	var out []*simNode
	for _, id := range strings.Split(t, ",") {
		if i, ok := s.byID[strings.TrimSpace(id)]; ok {
			out = append(out, s.nodes[i])
		}
	}
	return out
}

func (s *Sim) undoAt(d time.Duration, f undoFn) {
	s.push(event{at: s.now + int64(d), kind: evUndo, undo: f})
}

func (s *Sim) band(kind, target string, d time.Duration) {
	if s.tl == nil {
		return
	}
	end := s.now + int64(d)
	if d == 0 {
		end = -1 // open: until healed or the end
	}
	s.tl.Faults = append(s.tl.Faults, Band{From: time.Duration(s.now), To: time.Duration(end), Kind: kind, Target: target})
}

func ids(nds []*simNode) string {
	var b []string
	for _, nd := range nds {
		b = append(b, nd.id)
	}
	if len(b) > 6 {
		return fmt.Sprintf("%s,… (%d nodes)", strings.Join(b[:6], ","), len(b))
	}
	return strings.Join(b, ",")
}

// action carries out one timeline entry.
func (s *Sim) action(a *Action) {
	if s.healed && a.isFault() {
		return // faults stop at the heal
	}
	s.cover("action_" + a.Do)
	var nds []*simNode
	if a.Target != "" {
		nds = s.targets(a.Target)
		s.cur.what = a.Do + " " + ids(nds)
		if len(nds) == 0 {
			s.cur.what += "(no target)"
			return
		}
	}
	if s.identityAction(a, nds) {
		return
	}
	switch a.Do {
	case DoCrash:
		for _, nd := range nds {
			if !nd.up {
				continue
			}
			s.faultHits(nd)
			s.band("crash", nd.id, a.For.D())
			s.nodeDown(nd)
			if a.Permanent {
				nd.left = true // gone for good: no heal or restart brings it back
				s.cover("node_died_for_good")
			}
			if a.For > 0 {
				s.push(event{at: s.now + int64(a.For), kind: evStart, node: nd.idx, gen: nd.gen})
			}
		}
	case DoRestart:
		for _, nd := range nds {
			if !nd.up && !nd.left {
				s.push(event{at: s.now, kind: evStart, node: nd.idx, gen: nd.gen})
			}
		}
	case DoPause:
		for _, nd := range nds {
			if !nd.up || nd.paused {
				continue
			}
			if a.Hold != "" {
				nd.holdFor, nd.holdKind = int64(a.For), a.Hold
				continue
			}
			s.pause(nd, a.For.D())
		}
	case DoPartition:
		for _, nd := range nds {
			if nd.cutoff {
				continue
			}
			s.faultHits(nd)
			s.band("partition", nd.id, a.For.D())
			nd.cutoff = true
			nd.buffer = a.Buffer
			if a.For > 0 {
				s.undoAt(a.For.D(), func(s *Sim) { s.healNode(nd) })
			}
		}
	case DoHeal:
		for _, nd := range nds {
			s.healNode(nd)
		}
	case DoClock:
		for _, nd := range nds {
			c := nd.clock(s.now)
			nd.vbase, nd.nbase = s.now, c+int64(a.Jump)
			if a.Drift != nil {
				nd.drift = *a.Drift
				if math.Abs(nd.drift) > nd.cfg.DriftRate {
					s.cover("drift_beyond_bound")
				} else if nd.drift != 0 {
					s.cover("drift_within_bound")
				}
			}
			if a.Jump > 0 {
				s.cover("clock_jump")
			}
			s.band("clock", nd.id, 0)
		}
	case DoStoreOutage:
		s.outage++
		s.band("store outage", "store", a.For.D())
		s.undoAt(a.For.D(), func(s *Sim) {
			if s.outage > 0 {
				s.outage--
			}
		})
	case DoLatency, DoLoss:
		var sps []*spike
		if a.Target == "" {
			sps = append(sps, &spike{node: -1})
		}
		for _, nd := range nds {
			sps = append(sps, &spike{node: nd.idx})
		}
		kind := "latency spike"
		if a.Do == DoLoss {
			kind = "message loss"
		}
		for _, sp := range sps {
			sp.req, sp.rep = a.RequestLoss, a.ReplyLoss
			if a.Latency != nil {
				sp.lat = *a.Latency
			}
			s.spikes = append(s.spikes, sp)
			who := "network"
			if sp.node >= 0 {
				who = s.nodes[sp.node].id
			}
			s.band(kind, who, a.For.D())
			if a.For > 0 {
				s.undoAt(a.For.D(), func(s *Sim) { s.spikes = slices.DeleteFunc(s.spikes, func(x *spike) bool { return x == sp }) })
			}
		}
	case DoLeaseReset:
		key := s.nodes[0].cfg.LeaseKey
		lr, err := s.store.ReadLease(s.ctx, key)
		if err != nil {
			s.cur.note = "no lease yet"
			return
		}
		if err := s.store.SetLeaseStatus(key, engine.LeaseDeletable, lr.Lease.Epoch+10); err != nil {
			s.fail("operator", fmt.Sprintf("lease_reset: %v", err))
			return
		}
		s.band("lease reset", key, 0)
		s.revokedUpTo = lr.Lease.Epoch
		for _, nd := range s.nodes {
			if nd.believesCoordinator(s.now) {
				s.cover("lease_reset_while_leading")
			}
		}
	case DoPutTaskList:
		tl := a.TaskList.TaskList()
		s.cur.what = fmt.Sprintf("put_tasklist %s/%s×%d", tl.Domain, tl.Name, tl.Partitions)
		if _, err := s.store.PutTaskList(s.ctx, tl); err != nil {
			s.fail("operator", fmt.Sprintf("put_tasklist: %v", err))
			return
		}
		s.band("put tasklist", tl.Domain+"/"+tl.Name, 0)
		s.syncTaskLists()
		s.syncRows()
		s.check.configuredPresent(s)
	case DoDelTaskList:
		s.cur.what = fmt.Sprintf("delete_tasklist %s/%s", a.TaskList.Domain, a.TaskList.Name)
		if _, err := s.store.DeleteTaskList(s.ctx, a.TaskList.Domain, a.TaskList.Name); err != nil {
			s.cur.what += " (" + errName(err) + ")"
			return
		}
		s.band("delete tasklist", a.TaskList.Domain+"/"+a.TaskList.Name, 0)
		s.syncTaskLists()
		s.syncRows()
	case DoDrain, DoUndrain:
		for _, nd := range nds {
			if !nd.up {
				continue
			}
			s.band(a.Do, nd.id, 0)
			in := engine.Drain{Undrain: a.Do == DoUndrain}
			if nd.paused {
				nd.buffered = append(nd.buffered, input{in: in})
				continue
			}
			s.step(nd, in, refreshEager)
		}
	case DoAdminDrain, DoAdminUndrain:
		v := a.Do == DoAdminDrain
		for _, nd := range nds {
			if _, err := s.store.UpdateNode(s.ctx, nd.id, engine.NodeUpdate{Draining: &v}); err != nil {
				s.cur.note = nd.id + ": " + errName(err) // never registered: nothing to drain
				continue
			}
			s.band(a.Do, nd.id, 0)
		}
	case DoJoin:
		g := *a.Group
		g.Count = a.Count
		var added []*simNode
		for i := 0; i < a.Count; i++ {
			added = append(added, s.addNode(g, time.Duration(s.now)))
		}
		s.cur.what = fmt.Sprintf("join %d nodes %s", a.Count, ids(added))
		s.band("join", fmt.Sprintf("%d×%s", a.Count, g.Prefix), 0)
	case DoLeave:
		for _, nd := range nds {
			s.band("leave", nd.id, 0)
			if !nd.up {
				nd.left = true
				continue
			}
			// A graceful leave starts the failover clocks too: its partitions must run
			// elsewhere within worker_within, a new coordinator lead within
			// coordinator_within.
			s.faultHits(nd)
			if nd.paused {
				nd.buffered = append(nd.buffered, input{in: engine.Shutdown{}})
				continue
			}
			s.step(nd, engine.Shutdown{}, refreshEager)
		}
	case DoHealAll:
		s.healNetwork()
	case DoStoreFault:
		f := &storeFault{kind: a.Fault, rate: a.Rate}
		if f.rate == 0 {
			f.rate = 1
		}
		s.storeFaults = append(s.storeFaults, f)
		s.band("store fault", a.Fault, a.For.D())
		s.undoAt(a.For.D(), func(s *Sim) {
			s.storeFaults = slices.DeleteFunc(s.storeFaults, func(x *storeFault) bool { return x == f })
		})
	}
}

// pause stops nd's steps for d: what arrives meanwhile is buffered until it resumes.
func (s *Sim) pause(nd *simNode, d time.Duration) {
	s.faultHits(nd)
	s.band("pause", nd.id, d)
	nd.paused = true
	s.push(event{at: s.now + int64(d), kind: evResume, node: nd.idx, gen: nd.gen})
}

func (s *Sim) healNode(nd *simNode) {
	if !nd.cutoff {
		return
	}
	nd.cutoff = false
	nd.buffer = false
	s.flushHeld(nd)
	s.faultEnds(nd)
}

// flushHeld sends the requests a buffering partition or a hold-pause kept back, in
// order: they reach the store now, late.
func (s *Sim) flushHeld(nd *simNode) {
	held := nd.held
	nd.held = nil
	for _, req := range held {
		if req.gen != nd.gen {
			continue
		}
		s.cover("late_request_delivered")
		s.push(event{at: s.now + s.latency(nd.idx), kind: evArrive, node: nd.idx, gen: nd.gen, req: req})
	}
}

// resume ends a pause: the node gets what arrived meanwhile, then a Tick, and acts on
// whatever it still believes (the zombie-leader moment).
func (s *Sim) resume(nd *simNode) {
	nd.paused = false
	nd.fresh()
	if nd.st.Coordinator && !nd.before(s.now, nd.st.LeaseUntil) {
		s.cover("zombie_coordinator_resumed")
	}
	if len(nd.st.Owned) > 0 && !nd.before(s.now, nd.st.LivenessUntil) {
		s.cover("zombie_worker_resumed")
	}
	if !nd.cutoff {
		s.flushHeld(nd) // the driver sends what it held when the pause began
	}
	buf := nd.buffered
	nd.buffered = nil
	g := nd.gen
	for _, in := range buf {
		if nd.gen != g || !nd.up || s.viol != nil {
			return
		}
		if in.req != nil {
			s.deliver(nd, in.req)
		} else {
			s.step(nd, in.in, refreshEager)
		}
	}
	if nd.up && nd.gen == g {
		s.step(nd, engine.Tick{}, refreshEager)
	}
	s.faultEnds(nd)
}

// healNetwork ends every network and store fault.
func (s *Sim) healNetwork() {
	s.outage = 0
	s.spikes = nil
	s.storeFaults = nil
	for _, nd := range s.nodes {
		s.healNode(nd)
	}
}

// heal is the start of the liveness phase: faults stop, pauses end, the network and the
// store recover, clocks drifting beyond the bound are fixed, crashed nodes restart.
func (s *Sim) heal() {
	s.healed = true
	s.healNetwork()
	for _, nd := range s.nodes {
		nd.holdFor = 0 // a pause armed but not begun is a fault that no longer comes
		if nd.drift != 0 && math.Abs(nd.drift) > nd.cfg.DriftRate {
			c := nd.clock(s.now)
			nd.vbase, nd.nbase, nd.drift = s.now, c, 0
		}
		if nd.up && nd.paused {
			s.resume(nd)
		}
		if !nd.up && !nd.left && nd.started {
			s.push(event{at: s.now, kind: evStart, node: nd.idx, gen: nd.gen})
		}
	}
	s.metrics.healAt = s.now
}

// drawSwarm draws this seed's faults: which kinds are on, how often, and when.
func (s *Sim) drawSwarm(sw *Swarm) []Action {
	rng := newRand(s.seed, 0x737761726d)
	kinds := sw.Kinds
	if len(kinds) == 0 {
		kinds = SwarmKinds
	}
	lo, hi := sw.MinInterval.D(), sw.MaxInterval.D()
	if lo == 0 {
		lo = 5 * time.Second
	}
	if hi == 0 {
		hi = 40 * time.Second
	}
	hi = max(hi, lo)
	maxDrift := sw.MaxDrift
	if maxDrift == 0 {
		maxDrift = s.sc.Config.EngineConfig("x", NodeGroup{}).DriftRate
	}
	var acts []Action
	var on []string
	total := 0
	for _, g := range s.sc.Nodes {
		total += g.Count
	}
	// Leaves are permanent: keep a core of at least two thirds of the nodes, so that the
	// liveness phase has a cluster to converge.
	leaves := total / 3
	for _, k := range kinds {
		if rng.IntN(2) == 0 {
			continue
		}
		on = append(on, k)
		mean := lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
		for t := time.Duration(rng.ExpFloat64() * float64(mean)); t < sw.Until.D(); t += time.Duration(rng.ExpFloat64()*float64(mean)) + time.Millisecond {
			a := Action{At: Duration(t), Do: k}
			dur := func(lo, hi time.Duration) Duration { return Duration(lo + time.Duration(rng.Int64N(int64(hi-lo)))) }
			targets := []string{"coordinator", "worker", "random"}
			a.Target = targets[rng.IntN(len(targets))]
			switch k {
			case DoCrash:
				a.For = dur(time.Second, 20*time.Second)
			case DoPause:
				a.For = dur(100*time.Millisecond, 15*time.Second)
				if rng.IntN(3) == 0 {
					a.Target, a.Hold = "coordinator", "apply" // pause between deciding and writing
				}
			case DoPartition:
				a.For = dur(time.Second, 20*time.Second)
				a.Buffer = rng.IntN(2) == 0
			case DoClock:
				d := (2*rng.Float64() - 1) * maxDrift
				a.Drift = &d
			case DoStoreOutage:
				a.Target = ""
				a.For = dur(100*time.Millisecond, 10*time.Second)
			case DoLatency:
				a.Target = ""
				a.For = dur(time.Second, 10*time.Second)
				a.Latency = &Latency{Base: dur(10*time.Millisecond, 400*time.Millisecond), Jitter: dur(time.Millisecond, 200*time.Millisecond)}
			case DoLoss:
				a.Target = ""
				a.For = dur(time.Second, 15*time.Second)
				a.RequestLoss = rng.Float64() * 0.3
				a.ReplyLoss = rng.Float64() * 0.3
			case DoDrain:
				a.Target = "random"
				if rng.IntN(2) == 0 {
					acts = append(acts, Action{At: Duration(t + time.Duration(dur(5*time.Second, 20*time.Second))), Do: DoUndrain, Target: "all"})
				}
			case DoLeaseReset:
				a.Target = ""
			case DoLeave:
				a.Target = "worker"
				if leaves == 0 {
					continue
				}
				leaves--
			case DoJoin:
				a.Target = ""
				a.Count = 1 + rng.IntN(3)
				a.Group = &NodeGroup{Prefix: "sw", Capacity: 1 + rng.IntN(2)}
			case DoPutTaskList:
				a.Target = ""
				tl := TaskListDef{Domain: "swarm", Name: "t"}
				if n := len(s.sc.TaskLists); n > 0 {
					tl = s.sc.TaskLists[rng.IntN(n)]
				}
				tl.Partitions = 1 + rng.IntN(max(2*tl.Partitions, 8))
				a.TaskList = &tl
			}
			acts = append(acts, a)
		}
	}
	s.cov["swarm_kinds_on="+strings.Join(on, "+")]++
	return acts
}

// faultHits starts the failover clocks when a fault hits a node.
func (s *Sim) faultHits(nd *simNode) {
	s.metrics.faultHits(s, nd)
	s.probeDeadAfter(nd)
}

// faultEnds cancels failover clocks the fault did not need after all (a short pause or
// partition the node survived with its beliefs intact).
func (s *Sim) faultEnds(nd *simNode) {
	s.metrics.faultEnds(s, nd)
}

// sample runs once per virtual second: the timeline sample, convergence tracking after
// the heal, and the failover bounds.
func (s *Sim) sample() {
	if s.tl != nil {
		smp := Sample{At: time.Duration(s.now), Counts: make([]int32, len(s.nodes))}
		if c := s.coordinator(); c != nil && c.believesCoordinator(s.now) {
			smp.Coordinator, smp.Epoch = c.id, c.st.Epoch
		}
		for i, nd := range s.nodes {
			switch {
			case !nd.up:
				smp.Counts[i] = -1
			case nd.live(s.now):
				smp.Counts[i] = int32(len(nd.st.Owned))
			}
		}
		s.tl.Samples = append(s.tl.Samples, smp) // Result names the nodes
	}
	s.metrics.checkBounds(s)
	if s.healed && (s.metrics.converged < 0 || s.rowRev != s.metrics.convRev || s.check.maxEpoch != s.metrics.convEpoch) {
		// Converged: since when L1–L3 have held without interruption. Re-checked only
		// when an assignment or the leader changed since it last held (the end check
		// verifies it in full anyway).
		s.metrics.convRev, s.metrics.convEpoch = s.rowRev, s.check.maxEpoch
		if s.livenessProblem() != nil {
			s.metrics.converged = -1
		} else if s.metrics.converged < 0 {
			s.metrics.converged = s.now - s.metrics.healAt
		}
	}
}
