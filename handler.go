package helix

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/helixcoord/helix/engine"
)

// Partition is one partition given to this node, with its fencing token.
type Partition struct {
	ID engine.PartitionID
	// Generation grows every time the partition changes owner. Pass it with every write
	// the handler makes to its own systems, and have them refuse a generation lower than
	// the highest they have seen: that fences a previous owner that has not noticed yet.
	Generation uint64
}

func (p Partition) String() string { return fmt.Sprintf("%s@%d", p.ID, p.Generation) }

// Handler processes partitions. Process is called in its own goroutine when the node
// starts a partition and must return promptly once ctx is done: the partition was
// revoked (moved to another node), the node fenced itself (it could not prove it is
// alive), or the node is shutting down. context.Cause(ctx) is a *StopError saying which.
//
// ctx.Deadline() is the node's conservative liveness deadline (on the node's clock): the
// instant after which another node may be given the partition. It moves later each time
// a heartbeat succeeds; ctx is cancelled when it passes, whether or not the node's own
// loop is still running. A handler with long steps should check it before each step.
//
// The node waits (bounded, see WithStopTimeout) for Process to return before it tells
// the coordinator the partition is released. Returning before ctx is done (with or
// without an error) or panicking is a failure: the handler is restarted on this node,
// with the same generation, after a jittered exponential backoff, and after
// Config.GiveBackAfter failures within Config.GiveBackWindow the node gives the
// partition back so that the coordinator moves it to another node. Call Alive before
// each unit of work.
type Handler interface {
	Process(ctx context.Context, p Partition) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, p Partition) error

// Process calls f.
func (f HandlerFunc) Process(ctx context.Context, p Partition) error { return f(ctx, p) }

// StopError is the cause of a partition context's cancellation.
type StopError struct {
	Reason engine.StopReason
}

func (e *StopError) Error() string { return "partition stopped: " + e.Reason.String() }

// Is makes errors.Is(err, &StopError{Reason: r}) match on the reason.
func (e *StopError) Is(target error) bool {
	t, ok := target.(*StopError)
	return ok && t.Reason == e.Reason
}

// StopReason returns the reason a partition context was cancelled, or 0 if ctx is not
// done or was not cancelled by helix.
func StopReason(ctx context.Context) engine.StopReason {
	if se, ok := context.Cause(ctx).(*StopError); ok {
		return se.Reason
	}
	return 0
}

// partitionCtx is a partition's context: cancelled with a *StopError, and reporting the
// node's current liveness deadline (shared by all of the node's partitions and moved by
// the driver after each successful heartbeat) as its Deadline.
type partitionCtx struct {
	context.Context
	deadline *atomic.Pointer[time.Time]
	clk      clock.Clock // the node's: Alive measures the deadline on it
}

// Value makes the partition context findable by Alive through derived contexts.
func (c *partitionCtx) Value(key any) any {
	if _, ok := key.(partitionCtxKey); ok {
		return c
	}
	return c.Context.Value(key)
}

func (c *partitionCtx) Deadline() (time.Time, bool) {
	if d := c.deadline.Load(); d != nil && !d.IsZero() {
		return *d, true
	}
	return c.Context.Deadline()
}
