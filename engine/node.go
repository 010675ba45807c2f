package engine

import "time"

// PLACEHOLDER: the Node API is fixed here; the state machine is being written.

// Node is one helix node, both roles: coordinator candidate and worker.
// It is a pure state machine: Step(now, input) → effects. now is the node's own
// monotonic clock; it must never go backwards.
type Node struct {
	cfg Config
}

// NewNode validates cfg (after WithDefaults) and returns a node that has not started.
// seed drives the node's own randomness (retry jitter); the same seed and inputs give
// the same effects.
func NewNode(cfg Config, seed uint64) (*Node, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Node{cfg: cfg}, nil
}

// Step advances the node: it consumes one input at node time now and returns the
// effects to carry out, in order.
func (n *Node) Step(now time.Time, in Input) []Effect { return nil }

// OwnedPartition is a partition the node is processing.
type OwnedPartition struct {
	Partition  PartitionID
	Generation uint64
	Releasing  bool
}

// NodeState is a read-only snapshot of a node's beliefs, for checkers, status pages
// and metrics.
type NodeState struct {
	ID          string
	Incarnation uint64 // 0 until registered
	// Coordinator: the node believes it holds the lease at Epoch, until LeaseUntil
	// (node clock, conservative).
	Coordinator bool
	Epoch       uint64
	LeaseUntil  time.Time
	// Registered: the node has an incarnation it believes alive. It may process Owned
	// only until LivenessUntil (node clock, conservative: last successful heartbeat's
	// send time + DeadAfter·(1−ρ) − SafetyMargin); after that it must have stopped them.
	Registered    bool
	LivenessUntil time.Time
	Draining      bool
	Drained       bool // draining and owns nothing
	Stopped       bool
	Owned         []OwnedPartition // sorted by partition
}

// State returns the node's beliefs as of its last Step.
func (n *Node) State() NodeState { return NodeState{ID: n.cfg.NodeID} }
