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
//   - Validation (beyond ValidateName/ValidateNodeSpec/ValidateTaskList): ttl > 0,
//     epochs ≥ 1, incarnations ≥ 1, partitions 0..MaxPartitions-1. Field names:
//     lease.key, lease.owner, lease.ttl, lease.epoch, node.id, node.incarnation,
//     node.capacity, node.labels…, tasklist.…, batch.fence.key, batch.fence.epoch,
//     batch.dead_after (> 0 when Dead is not empty), batch.dead[i].id|incarnation,
//     batch.changes[i].partition…|kind|owner|incarnation|target, ack.partition…,
//     ack.node, ack.incarnation.
//   - Revisions: the store revision grows by exactly one per changed assignment row
//     (rows changed by one call get consecutive revisions: in partition order for
//     PutTaskList, in batch order for Apply). Node and lease changes do not move it.
//   - Expiry: a lease is held while now < ExpiresAt (see Lease.HeldAt); a node is
//     older than dead_after when now − LastHeartbeat > dead_after (strictly).
type Store interface {
	// AcquireLease: if the lease is free, released, deletable or expired, owner takes it
	// and the epoch grows by one; if owner already holds it, it is renewed and the epoch
	// is unchanged; if another owner holds it: *LeaseHeldError. A lease row that never
	// existed is created with epoch 1. An expired lease taken back by its previous owner
	// also gets epoch+1: that is a new tenure (the owner's own timer ended the old one).
	AcquireLease(ctx context.Context, key, owner string, ttl time.Duration) (LeaseReply, error)
	// RenewLease extends the lease to now+ttl only if owner and epoch match and it has
	// not expired; otherwise ErrLeaseLost (also for a lease that never existed). ttl may
	// be shorter than the previous one.
	RenewLease(ctx context.Context, key, owner string, epoch uint64, ttl time.Duration) (LeaseReply, error)
	// ReleaseLease frees the lease at once (status inactive) if owner and epoch match and
	// it has not expired; otherwise ErrLeaseLost. The epoch is kept: the next acquirer
	// gets epoch+1. The released row has no Owner.
	ReleaseLease(ctx context.Context, key, owner string, epoch uint64) (LeaseReply, error)
	// ReadLease returns the lease row, or ErrNotFound if it never existed.
	ReadLease(ctx context.Context, key string) (LeaseReply, error)

	// RegisterNode creates or replaces the node's row with a new incarnation (greater
	// than any incarnation the id had before), alive, not draining, heartbeat now. Any
	// older incarnation becomes dead: its heartbeats are refused and its assignments void.
	// The new incarnation is exactly the previous one + 1 (1 for a new id). Draining is
	// reset; capacity and labels are replaced by spec's.
	//
	// Exclusive registration (spec.DeadAfter > 0): if the id's current incarnation is
	// alive, its heartbeat is not older than DeadAfter (store time) and its Process differs
	// from spec.Process, the call fails with a *NodeInUseError (wrapping ErrNodeInUse) and
	// changes nothing. The same Process may register again (its own retry after a lost
	// reply). With spec.Replace the refusal is Pending and records spec's process as the
	// row's ReplaceBy: from then on the holder's heartbeats are refused (ErrNodeDead) and
	// its own registrations too (naming the replacer), so its registration expires and
	// its partitions, void only then, are never processed twice; a retry after ExpiresAt
	// succeeds. engine.RegistrationHeld is the rule. Validation: node.process
	// (0–MaxOwnerBytes), node.host (0–255 bytes), node.pid (≥ 0), node.dead_after (≥ 0).
	RegisterNode(ctx context.Context, spec NodeSpec) (RegisterReply, error)
	// Heartbeat records a heartbeat at store time for the incarnation, or ErrNodeDead if
	// that incarnation is dead, replaced, being replaced (ReplaceBy set) or deregistered (ErrNotFound: id unknown is also
	// reported as ErrNodeDead, so that the caller re-registers). If the node's assignment
	// revision differs from known, the reply carries the node's current assignments and
	// the partitions on their way to it.
	//
	// The node's assignment revision is a per-node-id counter: +1 at every RegisterNode
	// of the id, and +1 once per write call (Apply, AckRelease, GiveBack) that changes at least one
	// row whose Owner is the id before or after the call (any incarnation), or that is
	// on its way to the id before or after the call. A row is on its way to Target while
	// it is Releasing, and still while it is Unassigned after that (the release was
	// acknowledged, or its dead owner unassigned) until it is assigned or deleted; only
	// those rows have a Target. So a release towards the node bumps it, and so do the
	// ack or unassign that ends the Releasing state and the assign (to it or to anyone
	// else) or delete that ends the journey. Thus the first heartbeat of a new incarnation
	// always gets Changed (with its, empty, list), a node that keeps its known value
	// learns of every change to its rows, and it learns when a partition starts and
	// stops coming its way (HeartbeatReply.Incoming) — which lets it heartbeat faster
	// until the partition arrives, at no cost in steady state.
	Heartbeat(ctx context.Context, id string, incarnation uint64, known uint64) (HeartbeatReply, error)
	// DeregisterNode marks the incarnation dead at once (graceful leave). Deregistering
	// an incarnation that is already dead or replaced succeeds and changes nothing (so a
	// retry after a lost reply is safe); ErrNotFound if the id is unknown or the
	// incarnation was never issued. The node's rows are left for the coordinator.
	DeregisterNode(ctx context.Context, id string, incarnation uint64) (Reply, error)
	// UpdateNode changes a node's draining flag, capacity or labels (nil fields are left
	// as they are). Operator and self-service; not fenced. It applies to the id's row
	// whatever its status (it neither revives nor counts as a heartbeat); ErrNotFound if
	// the id is unknown. With u.Incarnation set it applies only to that incarnation while
	// it is current and alive (ErrNodeDead otherwise).
	UpdateNode(ctx context.Context, id string, u NodeUpdate) (Reply, error)
	// ListNodes returns every registered node (alive and dead), sorted by id.
	ListNodes(ctx context.Context) (NodesReply, error)

	// PutTaskList creates a task list or resizes it. In the same transaction it makes
	// sure every configured partition has an assignment row (new rows Unassigned; a
	// Deleted tombstone comes back Unassigned with its generation kept). Rows of
	// partitions beyond a smaller count are left for the coordinator to release.
	// Putting an unchanged task list changes nothing. A revived tombstone keeps its
	// Generation and Epoch; its Target is cleared.
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
	//
	// Checks, in this order (the first failure is returned): validation (ErrInvalid; a
	// partition may appear once per batch, a node once in Dead); the fence (ErrFenced:
	// the lease must exist, be active, unexpired, at exactly Fence.Epoch; who holds it
	// does not matter); every changed row's Epoch ≤ Fence.Epoch (ErrFenced: a row
	// written by a later tenure); Dead (ErrConflict if the id is unknown, the incarnation
	// was never issued, or a live one's heartbeat is not older than DeadAfter; an
	// incarnation already dead or replaced is skipped, so retries succeed); then each
	// change (ErrConflict if there is no row or Revision differs, or its precondition
	// fails). "Live owner" means the row is Assigned/Releasing and (Owner, Incarnation)
	// is the id's current incarnation, alive, and not in this batch's Dead.
	//   - assign: row Unassigned, or Assigned/Releasing with a non-live owner; the
	//     partition is configured; (Owner, Incarnation) is live. Target is cleared.
	//   - release: row Assigned with a live owner. Target may be empty (shrink, delete).
	//   - unassign: row Assigned/Releasing with a non-live owner. Owner and Incarnation
	//     are cleared, Generation and Target kept.
	//   - delete: row not Deleted, no live owner, partition not configured. Owner,
	//     Incarnation and Target are cleared, Generation kept.
	// Every written row records Epoch = Fence.Epoch. An empty batch is a pure fence check.
	Apply(ctx context.Context, b Batch) (ApplyReply, error)
	// AckRelease is a worker's acknowledgement that it stopped a Releasing partition:
	// the row must be Releasing, owned by (node, incarnation) at generation; it becomes
	// Unassigned (Target kept). ErrConflict if the row does not match; ErrNodeDead if the
	// incarnation is dead (its ownership is void already).
	// Order: ErrNodeDead (also for an unknown id or a replaced incarnation), then
	// ErrNotFound (no row for the partition), then ErrConflict. Owner and Incarnation are
	// cleared; Generation and Epoch (the last fenced write's) are kept. A repeated ack
	// gets ErrConflict.
	AckRelease(ctx context.Context, a Ack) (Reply, error)
	// GiveBack is a worker handing back a partition whose handler keeps failing on it:
	// the row must be Assigned (not Releasing: that is acknowledged with AckRelease),
	// owned by (node, incarnation) at generation; it becomes Unassigned (Owner,
	// Incarnation and Target cleared, Generation and Epoch kept) with GivenBackBy = node
	// and GivenBackAt = store now. Same error order as AckRelease: ErrNodeDead,
	// ErrNotFound, ErrConflict (a repeated give-back gets ErrConflict). It changes the
	// row's revision and the node's assignment revision like AckRelease. Not fenced: only
	// the owner gives its own row back, exactly as it acknowledges a release.
	GiveBack(ctx context.Context, g Ack) (Reply, error)
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
// incarnation, states Assigned and Releasing, sorted) at AssignRevision, and Incoming
// lists the partitions on their way to the node's id (rows Releasing, or Unassigned
// after a release, with Target == the id; any owner; Target names an id, not an
// incarnation), sorted, at the same revision. When not Changed both are empty: the
// caller's previous lists still hold.
type HeartbeatReply struct {
	Reply
	AssignRevision uint64
	Changed        bool
	Assignments    []Assignment
	// Incoming: partitions being handed over to this node. A worker heartbeats faster
	// while it is not empty, so that it learns of the assignment soon after the ack.
	// It includes the acknowledged, not yet assigned, ones: a node whose heartbeat falls
	// between the ack and the assignment must not conclude that nothing is coming.
	Incoming []PartitionID
	// Draining is the node's draining flag in the store, when Changed. A store grows the
	// node's assignment revision whenever UpdateNode changes the flag, so a node learns
	// of an operator's drain or undrain (helix drain NODE) with its next heartbeat.
	Draining bool
}

// NodeUpdate is a partial update of a node row; nil fields are unchanged.
type NodeUpdate struct {
	Draining *bool
	Capacity *int
	Labels   *[]Label

	// Incarnation, when not 0, makes the update conditional: it applies only while the
	// id's current incarnation is this one and alive, else ErrNodeDead and nothing
	// changes. A node's own updates set it, so that a process that was replaced (or a
	// second process with the same id) never changes its successor's row; an operator's
	// leave it 0.
	Incarnation uint64
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
