package helix

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/helixcoord/helix/engine"
)

// ClusterStatus is the cluster as the store sees it: who coordinates, which nodes are
// alive and what they own, which handoffs are in flight. Ages and expiries are in store
// time.
type ClusterStatus struct {
	Now         time.Time         `json:"now"`
	Coordinator CoordinatorStatus `json:"coordinator"`
	Nodes       []NodeSummary     `json:"nodes"`
	TaskLists   []TaskListSummary `json:"task_lists"`
	Handoffs    []Handoff         `json:"handoffs"`
	// Partitions is the number of configured partitions; Owned those assigned (or
	// releasing) to an alive node's current incarnation.
	Partitions int `json:"partitions"`
	Owned      int `json:"owned"`
	// GivenBack: partitions given back within the last GivenBackRecent because their
	// handler kept failing on a node, with their owner now ("" while unowned: a
	// partition that stays unowned is failing everywhere).
	GivenBack []GivenBackSummary `json:"given_back"`
}

// GivenBackRecent is how far back ClusterStatus lists give-backs.
const GivenBackRecent = time.Hour

// GivenBackSummary is one recent give-back.
type GivenBackSummary struct {
	Partition  string        `json:"partition"`
	By         string        `json:"by"`
	At         time.Time     `json:"at"`
	Age        time.Duration `json:"age_ns"`
	Owner      string        `json:"owner"`
	Generation uint64        `json:"generation"`
}

// CoordinatorStatus is the coordinator lease.
type CoordinatorStatus struct {
	Key       string        `json:"key"`
	Held      bool          `json:"held"`
	Owner     string        `json:"owner,omitempty"` // the holder's node id
	Epoch     uint64        `json:"epoch"`
	ExpiresAt time.Time     `json:"expires_at,omitzero"`
	ExpiresIn time.Duration `json:"expires_in_ns"`

	// Process is the holder's lease owner token (node id#nonce): one process of the node.
	Process string `json:"process,omitempty"`
}

// NodeSummary is one registered node.
type NodeSummary struct {
	ID           string        `json:"id"`
	Incarnation  uint64        `json:"incarnation"`
	State        string        `json:"state"` // alive, draining, dead
	Capacity     int           `json:"capacity"`
	HeartbeatAge time.Duration `json:"heartbeat_age_ns"`
	// Partitions counts the partitions the node's current incarnation owns, per task
	// list ("domain/name").
	Partitions map[string]int `json:"partitions"`
	Total      int            `json:"total"`
	// Host and PID: where the process that registered this incarnation runs.
	Host string `json:"host,omitempty"`
	PID  int    `json:"pid,omitempty"`
}

// TaskListSummary is one configured task list and how its partitions stand.
type TaskListSummary struct {
	Domain     string `json:"domain"`
	Name       string `json:"name"`
	Partitions int    `json:"partitions"`
	Owned      int    `json:"owned"`
	Releasing  int    `json:"releasing"`
	Unowned    int    `json:"unowned"`
}

// Handoff is a partition being released by From for To.
type Handoff struct {
	Partition  string `json:"partition"`
	From       string `json:"from"`
	To         string `json:"to"`
	Generation uint64 `json:"generation"`
}

// ReadClusterStatus reads the cluster's status from the store. leaseKey is the
// coordinator lease's key ("" means the default).
func ReadClusterStatus(ctx context.Context, s engine.Store, leaseKey string) (ClusterStatus, error) {
	if leaseKey == "" {
		leaseKey = engine.DefaultConfig().LeaseKey
	}
	var cs ClusterStatus
	cs.Coordinator.Key = leaseKey
	lr, err := s.ReadLease(ctx, leaseKey)
	switch {
	case errors.Is(err, engine.ErrNotFound):
	case err != nil:
		return cs, fmt.Errorf("reading lease %q: %w", leaseKey, err)
	default:
		l := lr.Lease
		cs.Coordinator.Epoch = l.Epoch
		if l.HeldAt(lr.Now) {
			cs.Coordinator.Held = true
			cs.Coordinator.Owner = engine.OwnerNodeID(l.Owner)
			cs.Coordinator.Process = l.Owner
			cs.Coordinator.ExpiresAt = l.ExpiresAt
			cs.Coordinator.ExpiresIn = l.ExpiresAt.Sub(lr.Now)
		}
	}
	st, err := s.ReadState(ctx, 0)
	if err != nil {
		return cs, fmt.Errorf("reading state: %w", err)
	}
	cs.Now = st.Now
	return summarize(cs, st), nil
}

func summarize(cs ClusterStatus, st engine.StateReply) ClusterStatus {
	type key struct{ domain, name string }
	tlIndex := map[key]int{}
	for i, tl := range st.TaskLists {
		tlIndex[key{tl.Domain, tl.Name}] = i
		cs.TaskLists = append(cs.TaskLists, TaskListSummary{Domain: tl.Domain, Name: tl.Name, Partitions: tl.Partitions})
		cs.Partitions += tl.Partitions
	}
	nodeIndex := map[string]int{}
	for _, n := range st.Nodes {
		state := "alive"
		if n.Status == engine.NodeDead {
			state = "dead"
		} else if n.Draining {
			state = "draining"
		}
		nodeIndex[n.ID] = len(cs.Nodes)
		cs.Nodes = append(cs.Nodes, NodeSummary{ID: n.ID, Incarnation: n.Incarnation, State: state,
			Capacity: n.Capacity, HeartbeatAge: n.HeartbeatAge, Partitions: map[string]int{}, Host: n.Host, PID: n.PID})
	}
	for _, a := range st.Assignments {
		k := key{a.Partition.Domain, a.Partition.TaskList}
		ti, ok := tlIndex[k]
		if !ok || a.Partition.Partition >= cs.TaskLists[ti].Partitions {
			continue
		}
		tl := &cs.TaskLists[ti]
		if a.State == engine.Releasing {
			cs.Handoffs = append(cs.Handoffs, Handoff{Partition: a.Partition.String(), From: a.Owner, To: a.Target, Generation: a.Generation})
			tl.Releasing++
		}
		i, known := nodeIndex[a.Owner]
		live := known && cs.Nodes[i].State != "dead" && cs.Nodes[i].Incarnation == a.Incarnation
		if a.GivenBackBy != "" && st.Now.Sub(a.GivenBackAt) < GivenBackRecent {
			cs.GivenBack = append(cs.GivenBack, GivenBackSummary{Partition: a.Partition.String(), By: a.GivenBackBy,
				At: a.GivenBackAt, Age: st.Now.Sub(a.GivenBackAt), Owner: a.Owner, Generation: a.Generation})
		}
		if (a.State == engine.Assigned || a.State == engine.Releasing) && live {
			cs.Nodes[i].Partitions[k.domain+"/"+k.name]++
			cs.Nodes[i].Total++
			tl.Owned++
			cs.Owned++
		}
	}
	for i := range cs.TaskLists {
		cs.TaskLists[i].Unowned = cs.TaskLists[i].Partitions - cs.TaskLists[i].Owned
	}
	slices.SortFunc(cs.Handoffs, func(a, b Handoff) int { return strings.Compare(a.Partition, b.Partition) })
	return cs
}
