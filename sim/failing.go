package sim

import (
	"fmt"
	"slices"

	"github.com/helixcoord/helix/engine"
)

// Failing handlers: a scenario may say that the handler of some partitions fails on
// some nodes (a host missing a dependency). Each start of such a partition on such a
// node is followed, After later, by a PartitionFailed input — what the SDK's driver
// reports when a handler returns early — so the engine's supervision runs exactly as in
// production: restarts with backoff, then a give-back, and the coordinator's cool-down
// steering. The end check adds: no partition is left on a node where it fails.

// FailingHandler is one entry of Scenario.Failing.
type FailingHandler struct {
	// Node is the id of the node the handler fails on.
	Node string `json:"node"`
	// Domain and TaskList name the task list; Partitions its partitions (empty: all).
	Domain     string `json:"domain"`
	TaskList   string `json:"tasklist"`
	Partitions []int  `json:"partitions,omitempty"`
	// After is how long the handler runs before it fails (default 50ms).
	After Duration `json:"after,omitempty"`
}

func (f FailingHandler) covers(node string, p engine.PartitionID) bool {
	return f.Node == node && f.Domain == p.Domain && f.TaskList == p.TaskList &&
		(len(f.Partitions) == 0 || slices.Contains(f.Partitions, p.Partition))
}

func validateFailing(sc *Scenario) error {
	for i, f := range sc.Failing {
		field := fmt.Sprintf("failing_handlers[%d]", i)
		if f.Node == "" {
			return verr(field+".node", "must name a node id")
		}
		if !slices.ContainsFunc(sc.TaskLists, func(t TaskListDef) bool { return t.Domain == f.Domain && t.Name == f.TaskList }) {
			return verr(field+".tasklist", fmt.Sprintf("%s/%s is not one of the scenario's task lists", f.Domain, f.TaskList))
		}
		if f.After < 0 {
			return verr(field+".after", "must be ≥ 0")
		}
	}
	return nil
}

// handlerFails is how long the handler of p runs on nd before it fails, if it does.
func (s *Sim) handlerFails(nd *simNode, p engine.PartitionID) (int64, bool) {
	for _, f := range s.sc.Failing {
		if f.covers(nd.id, p) {
			d := f.After.D()
			if d == 0 {
				d = 50e6
			}
			return int64(d), true
		}
	}
	return 0, false
}

// scheduleFailure queues the failure of a partition just started on nd, if its handler
// fails there.
func (s *Sim) scheduleFailure(nd *simNode, sp engine.StartPartition) {
	if d, ok := s.handlerFails(nd, sp.Partition); ok {
		pf := engine.PartitionFailed{Partition: sp.Partition, Generation: sp.Generation, Reason: "error: fails on this node (scenario)"}
		s.push(event{at: s.now + d, kind: evFail, node: nd.idx, gen: nd.gen, fail: &pf})
	}
}

// deliverFailure feeds a queued failure to its node; a paused process reports it when
// it runs again, a restarted one never (the handler died with the process).
func (s *Sim) deliverFailure(e event) {
	nd := s.nodes[e.node]
	if nd.gen != e.gen || !nd.up {
		return
	}
	if nd.paused {
		e.at = s.now + 10e6
		s.push(e)
		return
	}
	s.begin(e, "handler fails "+e.fail.Partition.String())
	s.cover("handler_failed")
	s.step(nd, *e.fail, refreshEager)
	s.finish()
}

// failingProblem is the end check of failing handlers: every partition runs on a node
// where its handler works.
func (s *Sim) failingProblem() *problem {
	if len(s.sc.Failing) == 0 {
		return nil
	}
	for _, nd := range s.nodes {
		if !nd.up {
			continue
		}
		for _, o := range nd.st.Owned {
			if _, fails := s.handlerFails(nd, o.Partition); fails {
				return &problem{"L2", fmt.Sprintf("%s is on %s, where its handler fails", o.Partition, nd.id)}
			}
		}
		for _, sp := range nd.st.Supervised {
			if sp.State != engine.SupRunning {
				return &problem{"L2", fmt.Sprintf("%s is %s on %s at the end", sp.Partition, sp.State, nd.id)}
			}
		}
	}
	return nil
}

// handlerFailure is the input an evFail event carries.
type handlerFailure = engine.PartitionFailed
