package helix

import (
	"errors"
	"time"

	"github.com/helixcoord/helix/engine"
)

// Observer receives a node's countable happenings, so that the SDK does not impose a
// metrics library on its importers (package observe implements it with Prometheus).
// Gauges — leadership, epoch, partitions owned, heartbeat age — are not pushed: read
// them from Node.Status when scraped. Methods are called from several goroutines and
// must not block.
type Observer interface {
	// StoreCall: one store operation (engine.Op.Name) finished after took; err is nil
	// or the error it returned (see ErrorClass).
	StoreCall(node, op string, took time.Duration, err error)
	// PartitionStarted: the handler of p was started.
	PartitionStarted(node string, p Partition)
	// PartitionStopped: the handler of p was told to stop for reason and had returned
	// (or overran the stop timeout) after took. For reason StopReleased, took is this
	// node's part of a graceful handoff.
	PartitionStopped(node string, p Partition, reason engine.StopReason, took time.Duration)
	// Event: the state machine reported e (became_coordinator, stepped_down, …).
	Event(node string, e engine.Event)
}

// NopObserver discards everything.
type NopObserver struct{}

func (NopObserver) StoreCall(string, string, time.Duration, error)                       {}
func (NopObserver) PartitionStarted(string, Partition)                                   {}
func (NopObserver) PartitionStopped(string, Partition, engine.StopReason, time.Duration) {}
func (NopObserver) Event(string, engine.Event)                                           {}

// ErrorClass names the class of a store error for metrics and logs: "" for nil, then
// "lease_held", "lease_lost", "fenced", "node_dead", "not_found", "conflict", "invalid",
// "unavailable", or "other" (an unclassified IO failure, treated as unavailable).
func ErrorClass(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, engine.ErrLeaseHeld):
		return "lease_held"
	case errors.Is(err, engine.ErrLeaseLost):
		return "lease_lost"
	case errors.Is(err, engine.ErrFenced):
		return "fenced"
	case errors.Is(err, engine.ErrNodeDead):
		return "node_dead"
	case errors.Is(err, engine.ErrNotFound):
		return "not_found"
	case errors.Is(err, engine.ErrConflict):
		return "conflict"
	case errors.Is(err, engine.ErrInvalid):
		return "invalid"
	case errors.Is(err, engine.ErrUnavailable):
		return "unavailable"
	}
	return "other"
}
