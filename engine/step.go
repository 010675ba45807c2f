package engine

import "time"

// Input is what a driver feeds to Node.Step: Tick, StoreReply, Drain or Shutdown.
type Input interface{ isInput() }

// Tick tells the node that time has passed (it was woken, or the driver polls). A node
// acts on timers only inside Step, so a driver must deliver a Tick at or after every
// WakeAt it was given.
type Tick struct{}

// StoreReply delivers the outcome of an earlier StoreRequest with the same ID. Value is
// the reply (a *Reply type of store.go, by value) when Err is nil. A driver that gives up
// on a request (deadline passed, connection lost) delivers Err wrapping ErrUnavailable;
// the node also times requests out by itself at their Deadline, and ignores replies to
// requests it no longer waits for.
type StoreReply struct {
	ID    uint64
	Value any
	Err   error
}

// Drain asks the node to give back all its partitions and stop taking new ones; it
// stays registered (and may stay coordinator). Undrain reverses it.
type Drain struct{ Undrain bool }

// Shutdown asks for a graceful exit: drain, release the lease if held, deregister,
// then emit Stopped.
type Shutdown struct{}

func (Tick) isInput()       {}
func (StoreReply) isInput() {}
func (Drain) isInput()      {}
func (Shutdown) isInput()   {}

// Effect is what Node.Step asks its driver to do.
type Effect interface{ isEffect() }

// StoreRequest asks the driver to perform Op and deliver the outcome as a StoreReply with
// the same ID. Deadline is on the node's clock; a driver must abandon the call by then.
type StoreRequest struct {
	ID       uint64
	Op       Op
	Deadline time.Time
}

// StartPartition tells the application to start processing a partition. Generation is
// the fencing token to pass along with the application's own writes.
type StartPartition struct {
	Partition  PartitionID
	Generation uint64
}

// StopPartition tells the application to stop processing a partition now. The node
// considers it stopped when the effect is emitted: a driver must not return to Step
// until the handler has stopped (or must stop it synchronously).
type StopPartition struct {
	Partition  PartitionID
	Generation uint64
	Reason     StopReason
}

// StopReason says why a partition was stopped.
type StopReason uint8

const (
	StopReleased   StopReason = iota + 1 // the coordinator moved it (handoff or drain)
	StopSelfFenced                       // the node's liveness timer ran out
	StopNodeDead                         // the store said this incarnation is dead
	StopShutdown                         // graceful shutdown
	StopRevoked                          // no longer assigned to this incarnation
	StopFailed                           // its handler failed (PartitionFailed); it is restarted or given back
)

var stopNames = [...]string{"", "released", "self-fenced", "node-dead", "shutdown", "revoked", "failed"}

func (r StopReason) String() string {
	if int(r) < len(stopNames) && r > 0 {
		return stopNames[r]
	}
	return "StopReason(?)"
}

// WakeAt asks the driver to deliver a Tick at or after At (node clock). Only the latest
// WakeAt counts.
type WakeAt struct{ At time.Time }

// Stopped is emitted once, when a Shutdown has completed or the node stopped on its own;
// the node then ignores inputs. Err is nil after a Shutdown. It wraps ErrNodeInUse when
// the node stopped because another process holds its id: at start (its registration was
// refused) or later (it was replaced, e.g. by helix node --replace, and refuses to take
// the id back, so that two processes do not evict each other in a loop).
type Stopped struct{ Err error }

// Event reports something worth logging, counting or tracing. Kind is a stable
// snake_case name ("became_coordinator", "stepped_down", "registered", …).
type Event struct {
	Kind      string
	Epoch     uint64
	Node      string
	Partition PartitionID
	Detail    string
}

func (StoreRequest) isEffect()   {}
func (StartPartition) isEffect() {}
func (StopPartition) isEffect()  {}
func (WakeAt) isEffect()         {}
func (Stopped) isEffect()        {}
func (Event) isEffect()          {}
