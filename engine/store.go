package engine

import (
	"context"
	"time"
)

// Store is the contract every backend implements: engine/memstore in memory (the
// reference), mysqlstore on MySQL and MariaDB. engine/storetest is its conformance suite.
//
// Rules shared by every method:
//   - Time is the store's. Every reply carries Now, the store's clock when it answered;
//     lease expiry and heartbeat age are computed by the store, never from the caller's
//     clock.
//   - Errors are the sentinels of errors.go (wrapped); anything else is an IO failure
//     whose outcome is unknown (treat as ErrUnavailable: re-read, never repeat blindly).
//   - Bad input returns a *ValidationError and changes nothing.
//   - Methods honour ctx's deadline.
type Store interface {
	// AcquireLease: if the lease is free, released, deletable or expired, owner takes it
	// and the epoch grows by one; if owner already holds it, it is renewed and the epoch
	// is unchanged; if another owner holds it: *LeaseHeldError. A lease row that never
	// existed is created with epoch 1.
	AcquireLease(ctx context.Context, key, owner string, ttl time.Duration) (LeaseReply, error)
	// RenewLease extends the lease to now+ttl only if owner and epoch match and it has
	// not expired; otherwise ErrLeaseLost.
	RenewLease(ctx context.Context, key, owner string, epoch uint64, ttl time.Duration) (LeaseReply, error)
	// ReleaseLease frees the lease at once (status inactive) if owner and epoch match and
	// it has not expired; otherwise ErrLeaseLost. The epoch is kept: the next acquirer
	// gets epoch+1.
	ReleaseLease(ctx context.Context, key, owner string, epoch uint64) (LeaseReply, error)
	// ReadLease returns the lease row, or ErrNotFound if it never existed.
	ReadLease(ctx context.Context, key string) (LeaseReply, error)

	// RegisterNode creates or replaces the node's row with a new incarnation (greater
	// than any incarnation the id had before), alive, not draining, heartbeat now. Any
	// older incarnation becomes dead: its heartbeats are refused and its assignments void.
	RegisterNode(ctx context.Context, spec NodeSpec) (RegisterReply, error)
	// Heartbeat records a heartbeat at store time for the incarnation, or ErrNodeDead if
	// that incarnation is dead, replaced or deregistered (ErrNotFound: id unknown is also
	// reported as ErrNodeDead, so that the caller re-registers). If the node's assignment
	// revision differs from known, the reply carries the node's current assignments.
	Heartbeat(ctx context.Context, id string, incarnation uint64, known uint64) (HeartbeatReply, error)
	// DeregisterNode marks the incarnation dead at once (graceful leave).
	DeregisterNode(ctx context.Context, id string, incarnation uint64) (Reply, error)
	// UpdateNode changes a node's draining flag, capacity or labels (nil fields are left
	// as they are). Operator and self-service; not fenced.
	UpdateNode(ctx context.Context, id string, u NodeUpdate) (Reply, error)
	// ListNodes returns every registered node (alive and dead), sorted by id.
	ListNodes(ctx context.Context) (NodesReply, error)

	// PutTaskList creates a task list or resizes it. In the same transaction it makes
	// sure every configured partition has an assignment row (new rows Unassigned; a
	// Deleted tombstone comes back Unassigned with its generation kept). Rows of
	// partitions beyond a smaller count are left for the coordinator to release.
	PutTaskList(ctx context.Context, tl TaskList) (Reply, error)
	// DeleteTaskList removes the task list's configuration; its rows are left for the
	// coordinator to release and mark Deleted. ErrNotFound if it does not exist.
	DeleteTaskList(ctx context.Context, domain, name string) (Reply, error)
	// ListTaskLists returns every task list sorted by domain and name.
	ListTaskLists(ctx context.Context) (TaskListsReply, error)

	// ReadState is the coordinator's one read per tick: all nodes, all task lists, and the
	// assignment rows whose Revision > since (all rows when since is 0), sorted by
	// partition, in one consistent snapshot.
	ReadState(ctx context.Context, since uint64) (StateReply, error)
	// ReadAssignments returns the assignment rows with Revision > since, sorted.
	ReadAssignments(ctx context.Context, since uint64) (AssignmentsReply, error)
	// Apply writes a coordinator's batch, all or nothing, fenced by the batch's lease
	// epoch in the same transaction (ErrFenced if it is not the current, unexpired epoch
	// of Fence.Key). Preconditions (row revisions, dead nodes' heartbeat age) failing:
	// ErrConflict. Nothing is written on any error.
	Apply(ctx context.Context, b Batch) (ApplyReply, error)
	// AckRelease is a worker's acknowledgement that it stopped a Releasing partition:
	// the row must be Releasing, owned by (node, incarnation) at generation; it becomes
	// Unassigned (Target kept). ErrConflict if the row does not match; ErrNodeDead if the
	// incarnation is dead (its ownership is void already).
	AckRelease(ctx context.Context, a Ack) (Reply, error)
}

// Reply is the part every reply carries.
type Reply struct {
	Now time.Time // store time when the reply was made
}

// LeaseReply carries the lease row after the call.
type LeaseReply struct {
	Reply
	Lease Lease
}

// RegisterReply carries the new incarnation.
type RegisterReply struct {
	Reply
	Incarnation uint64
}

// HeartbeatReply: when Changed, Assignments is the node's complete list of rows (for this
// incarnation, states Assigned and Releasing, sorted) at AssignRevision.
type HeartbeatReply struct {
	Reply
	AssignRevision uint64
	Changed        bool
	Assignments    []Assignment
}

// NodeUpdate is a partial update of a node row; nil fields are unchanged.
type NodeUpdate struct {
	Draining *bool
	Capacity *int
	Labels   *[]Label
}

// NodesReply lists nodes sorted by id.
type NodesReply struct {
	Reply
	Nodes []NodeInfo
}

// TaskListsReply lists task lists sorted by domain, name.
type TaskListsReply struct {
	Reply
	TaskLists []TaskList
}

// AssignmentsReply carries rows with Revision > the caller's since, sorted by partition,
// and the store's current revision (≥ every returned row's).
type AssignmentsReply struct {
	Reply
	Revision    uint64
	Assignments []Assignment
}

// StateReply is one consistent snapshot for the coordinator.
type StateReply struct {
	Reply
	Nodes       []NodeInfo
	TaskLists   []TaskList
	Revision    uint64
	Assignments []Assignment
}

// Fence names the lease and epoch a write is fenced by.
type Fence struct {
	Key   string
	Epoch uint64
}

// ChangeKind is what one Change does to an assignment row.
type ChangeKind uint8

const (
	// ChangeAssign: give the partition to Owner at Incarnation, state Assigned,
	// Generation+1. The row must be Unassigned, or owned by a dead incarnation.
	ChangeAssign ChangeKind = iota + 1
	// ChangeRelease: ask the current owner to stop; state Releasing, Target set.
	ChangeRelease
	// ChangeUnassign: clear the owner without an acknowledgement. Only for owners that are
	// dead (declared in this batch or earlier): their own timers stopped them.
	ChangeUnassign
	// ChangeDelete: mark a partition that is no longer configured Deleted (tombstone).
	// The row must be Unassigned or owned by a dead incarnation.
	ChangeDelete
)

var changeNames = [...]string{"", "assign", "release", "unassign", "delete"}

func (k ChangeKind) String() string {
	if int(k) < len(changeNames) && k > 0 {
		return changeNames[k]
	}
	return "ChangeKind(?)"
}

// Change is one conditional write to one assignment row.
type Change struct {
	Kind      ChangeKind
	Partition PartitionID
	// Revision is the row's revision the change was planned from; if the row changed
	// since, the batch fails with ErrConflict.
	Revision    uint64
	Owner       string // ChangeAssign
	Incarnation uint64 // ChangeAssign
	Target      string // ChangeRelease
}

// DeadNode names a node incarnation the coordinator declares dead.
type DeadNode struct {
	ID          string
	Incarnation uint64
}

// Batch is one coordinator write: declare nodes dead, then apply changes, fenced.
type Batch struct {
	Fence Fence
	// Dead incarnations are marked dead only if, by store time, their last heartbeat is
	// older than DeadAfter at the moment of the write; otherwise ErrConflict.
	Dead      []DeadNode
	DeadAfter time.Duration
	Changes   []Change
}

// ApplyReply carries the store revision after the batch.
type ApplyReply struct {
	Reply
	Revision uint64
}

// Ack is a worker's release acknowledgement.
type Ack struct {
	Partition   PartitionID
	Node        string
	Incarnation uint64
	Generation  uint64
}
