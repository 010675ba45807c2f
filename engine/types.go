package engine

import (
	"fmt"
	"time"
)

// PartitionID names one partition of one task list. Partitions are numbered 0..N-1.
type PartitionID struct {
	Domain    string
	TaskList  string
	Partition int
}

func (p PartitionID) String() string {
	return fmt.Sprintf("%s/%s/%d", p.Domain, p.TaskList, p.Partition)
}

// Less orders partitions by domain, task list, then number. Every list of partitions the
// engine emits is sorted this way, so outputs never depend on map order.
func (p PartitionID) Less(q PartitionID) bool {
	if p.Domain != q.Domain {
		return p.Domain < q.Domain
	}
	if p.TaskList != q.TaskList {
		return p.TaskList < q.TaskList
	}
	return p.Partition < q.Partition
}

// ComparePartitions is PartitionID.Less as a three-way comparison, for slices.SortFunc.
func ComparePartitions(p, q PartitionID) int {
	switch {
	case p.Less(q):
		return -1
	case q.Less(p):
		return 1
	}
	return 0
}

// TaskList is a named queue split into Partitions partitions, grouped by domain.
type TaskList struct {
	Domain     string
	Name       string
	Partitions int
}

// PartitionState is the handoff state of one assignment row.
type PartitionState uint8

const (
	// Unassigned: nobody owns the partition; the coordinator may assign it.
	Unassigned PartitionState = iota
	// Assigned: Owner (at Incarnation) may process it, fenced by Generation.
	Assigned
	// Releasing: the coordinator asked Owner to stop; Owner still may be processing it
	// until it acknowledges (or is declared dead). Target is the intended next owner.
	Releasing
	// Deleted: the partition is no longer configured (its task list was deleted or
	// shrunk) and nobody owns it. The row is kept as a tombstone so that its generation
	// keeps growing if the partition is configured again.
	Deleted
)

var stateNames = [...]string{"unassigned", "assigned", "releasing", "deleted"}

func (s PartitionState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("PartitionState(%d)", uint8(s))
}

// ParsePartitionState is the inverse of PartitionState.String.
func ParsePartitionState(s string) (PartitionState, error) {
	for i, n := range stateNames {
		if n == s {
			return PartitionState(i), nil
		}
	}
	return 0, fmt.Errorf("state %q: must be one of unassigned, assigned, releasing, deleted", s)
}

// Assignment is one row of the assignment table: who owns a partition and in what state.
type Assignment struct {
	Partition   PartitionID
	Owner       string // node id; empty when Unassigned or Deleted
	Incarnation uint64 // the owner's incarnation when it was assigned
	// Generation grows by one each time the partition is assigned to an owner. It is the
	// per-partition fencing token handed to the application's handler.
	Generation uint64
	State      PartitionState
	// Target is the intended next owner while Releasing, and is kept after the release is
	// acknowledged (state Unassigned) as a hint for the allocator; empty otherwise.
	Target string
	// Epoch is the coordinator epoch of the last fenced write to the row; a write with a
	// lower epoch is refused.
	Epoch uint64
	// Revision is the store-wide revision of the last change to the row. Incremental reads
	// return the rows whose Revision is greater than the caller's.
	Revision uint64
	// GivenBackBy is the last node that gave the partition back because its handler kept
	// failing there (Store.GiveBack), and GivenBackAt the store's time of that; empty and
	// zero if it never was. Later writes keep both: the coordinator keeps that node off
	// the partition for Config.GiveBackCoolDown after GivenBackAt.
	GivenBackBy string
	GivenBackAt time.Time
}

// IncomingTo is the node a partition is on its way to, or "": the Target of a row that is
// Releasing, or Unassigned after its release was acknowledged (until it is assigned).
// These are the rows a heartbeat reports as Incoming to that node.
func (a Assignment) IncomingTo() string {
	if a.State == Releasing || a.State == Unassigned {
		return a.Target
	}
	return ""
}

// Label is one key=value label of a node. Labels are kept sorted by key.
type Label struct {
	Key, Value string
}

// NodeStatus is the liveness state of a registered node incarnation.
type NodeStatus uint8

const (
	// NodeAlive: registered and not (yet) declared dead.
	NodeAlive NodeStatus = iota
	// NodeDead: declared dead by the coordinator, or replaced by a newer incarnation, or
	// deregistered. Its heartbeats are refused with ErrNodeDead.
	NodeDead
)

func (s NodeStatus) String() string {
	if s == NodeAlive {
		return "alive"
	}
	return "dead"
}

// NodeSpec is what a node says about itself when it registers.
type NodeSpec struct {
	ID       string
	Capacity int // weight ≥ 1: a node of capacity 2 gets twice the share of one of capacity 1
	Labels   []Label

	// Process is the registering process's token (LeaseOwner(id, nonce), the same string it
	// acquires the lease with): it tells a process's own retry from another process
	// started with the same id. Host and PID say where that process runs, for the
	// operator reading an ErrNodeInUse or a status page. All three are recorded on the row.
	Process string
	Host    string
	PID     int
	// DeadAfter, when > 0, makes the registration exclusive: it is refused with a
	// *NodeInUseError (wrapping ErrNodeInUse) while the id's current incarnation is alive,
	// its heartbeat is not older than DeadAfter by store time, and it belongs to another
	// Process, unless Replace is set. 0 keeps the unconditional replacement (tests, tools).
	DeadAfter time.Duration
	// Replace takes the id over from a live process on purpose (helix node --replace).
	// It is safe, not instant: the holder's heartbeats are refused from then on, so it
	// stops its partitions by its own liveness timer, and this registration succeeds once
	// the holder's heartbeat is older than DeadAfter. Until then the call fails with a
	// *NodeInUseError whose Pending is set (retry at its ExpiresAt). Needs Process.
	Replace bool
}

// NodeInfo is a node as the store knows it.
type NodeInfo struct {
	ID          string
	Incarnation uint64
	Capacity    int
	Labels      []Label
	Draining    bool
	Status      NodeStatus
	// LastHeartbeat is the store's time of the last accepted heartbeat (or registration).
	LastHeartbeat time.Time
	// HeartbeatAge is store-now minus LastHeartbeat, computed by the store: liveness is
	// always judged by store time, never by a client's clock.
	HeartbeatAge time.Duration
	// Process, Host and PID are the registering process's (NodeSpec); empty when it did
	// not say.
	Process string
	Host    string
	PID     int
	// ReplaceBy is the process waiting to take the id over (a registration with Replace
	// while this incarnation was alive): its Process, Host and PID; empty when none. While
	// it is set this incarnation's heartbeats are refused, so its registration expires.
	ReplaceBy NodeProcess
}

// NodeProcess names one process that registered, or wants to register, a node id.
type NodeProcess struct {
	Process string
	Host    string
	PID     int
}

// LeaseStatus is the status column of a lease row.
type LeaseStatus uint8

const (
	LeaseInactive  LeaseStatus = 0 // released or never held; free to acquire
	LeaseActive    LeaseStatus = 1 // held by Owner until ExpiresAt (store time)
	LeaseDeletable LeaseStatus = 2 // retired by an operator; treated as free
)

// Lease is one row of the lease table. Rows are never deleted, so an epoch is never
// issued twice for the same key.
type Lease struct {
	Key       string
	Owner     string // empty when free
	Epoch     uint64 // grows by one each time ownership changes
	ExpiresAt time.Time
	Status    LeaseStatus
}

// HeldAt reports whether the lease is held (active and unexpired) at store time now.
func (l Lease) HeldAt(now time.Time) bool {
	return l.Status == LeaseActive && now.Before(l.ExpiresAt)
}
