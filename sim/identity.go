package sim

import (
	"errors"
	"fmt"

	"github.com/helixcoord/helix/engine"
)

// One process per node identity (issue 10 §1): actions that start a second process with
// a node's id, and the check that it ends as the operator expects.

// Action kinds that start a second process with the target's node id.
const (
	// DoDuplicate starts a second process with the target's id (two hosts with one
	// hostname, a restarted pod whose old copy still runs). It must never lead while the
	// first does (S1), and must stop refused (I1) while the first stays alive.
	DoDuplicate = "duplicate"
	// DoReplace starts a second process with the target's id and Replace set (helix node
	// --replace): it must take the id over, and the first must stop (I1).
	DoReplace = "replace"
)

func init() {
	actionKinds = append(actionKinds, DoDuplicate, DoReplace)
	needTarget[DoDuplicate] = true
	needTarget[DoReplace] = true
	Invariants = append(Invariants, "I1")
}

// processConfig is nd's engine config for one process started with seed: a nonce of its
// own, derived from the run's seeded randomness (never the wall clock), so that every
// restart is a new process whose lease owner differs from its predecessor's, and a host
// and pid that name the simulated process in refusals.
func processConfig(nd *simNode, seed uint64) engine.Config {
	cfg := nd.cfg
	cfg.Nonce = fmt.Sprintf("%016x", splitmix(seed^0x70726f63657373))
	cfg.Host = fmt.Sprintf("sim-%d", nd.idx)
	cfg.PID = int(nd.restarts) + 1
	return cfg
}

// identityAction carries out duplicate and replace; it reports whether a was one.
func (s *Sim) identityAction(a *Action, nds []*simNode) bool {
	if a.Do != DoDuplicate && a.Do != DoReplace {
		return false
	}
	for _, nd := range nds {
		if !nd.up || nd.cfg.NoWork {
			continue // a coordinator-only node never registers: nothing to refuse
		}
		dup := &simNode{
			idx:     int32(len(s.nodes)),
			id:      nd.id,
			group:   nd.group,
			cfg:     nd.cfg,
			pending: map[uint64]*request{},
			drift:   nd.group.Drift,
			nbase:   int64(nd.group.ClockOffset),
			dupOf:   nd.idx + 1,
		}
		dup.cfg.Replace = a.Do == DoReplace
		// Not in byID: targets by id keep naming the first process.
		s.nodes = append(s.nodes, dup)
		s.band(a.Do, nd.id, 0)
		s.push(event{at: s.now, kind: evStart, node: dup.idx, gen: dup.gen})
	}
	return true
}

// identityProblem (I1), checked with the liveness invariants: a duplicate process stopped
// with ErrNodeInUse while the first one runs on; after a replace, the first process
// stopped with ErrNodeInUse and the replacement runs registered.
func (s *Sim) identityProblem() *problem {
	for _, dup := range s.nodes {
		if dup.dupOf == 0 {
			continue
		}
		first := s.nodes[dup.dupOf-1]
		refused := func(nd *simNode) bool { return nd.left && errors.Is(nd.stopErr, engine.ErrNodeInUse) }
		if !dup.cfg.Replace {
			if !refused(dup) {
				return &problem{"I1", fmt.Sprintf("the duplicate process of %s is still running (up %v) or stopped without ErrNodeInUse (%v)", dup.id, dup.up, dup.stopErr)}
			}
			continue
		}
		dup.fresh()
		if !refused(first) || !dup.up || !dup.st.Registered {
			return &problem{"I1", fmt.Sprintf("replace of %s: first process up %v (stop error %v), replacement up %v registered %v",
				dup.id, first.up, first.stopErr, dup.up, dup.st.Registered)}
		}
	}
	return nil
}
