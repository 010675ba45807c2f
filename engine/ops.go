package engine

import (
	"context"
	"time"
)

// Op is one Store call as data: what a state machine returns (inside a StoreRequest
// effect) when it needs IO. Do performs it; the result goes back to the machine as a
// StoreReply input. Keeping calls as data is what lets the simulator delay, drop,
// duplicate or reorder them.
type Op interface {
	// Name is the operation's short name, for metrics and traces ("acquire", "apply", …).
	Name() string
	// Do performs the call against s and returns the reply value (one of the *Reply
	// types of store.go, by value) and the error.
	Do(ctx context.Context, s Store) (any, error)
}

type (
	OpAcquireLease struct {
		Key, Owner string
		TTL        time.Duration
	}
	OpRenewLease struct {
		Key, Owner string
		Epoch      uint64
		TTL        time.Duration
	}
	OpReleaseLease struct {
		Key, Owner string
		Epoch      uint64
	}
	OpReadLease    struct{ Key string }
	OpRegisterNode struct{ Spec NodeSpec }
	OpHeartbeat    struct {
		ID          string
		Incarnation uint64
		Known       uint64
	}
	OpDeregisterNode struct {
		ID          string
		Incarnation uint64
	}
	OpUpdateNode struct {
		ID     string
		Update NodeUpdate
	}
	OpListNodes       struct{}
	OpReadState       struct{ Since uint64 }
	OpReadAssignments struct{ Since uint64 }
	OpApply           struct{ Batch Batch }
	OpAckRelease      struct{ Ack Ack }
	// OpGiveBack gives a failing partition back (Store.GiveBack).
	OpGiveBack struct{ GiveBack Ack }
)

func (OpAcquireLease) Name() string    { return "acquire" }
func (OpRenewLease) Name() string      { return "renew" }
func (OpReleaseLease) Name() string    { return "release" }
func (OpReadLease) Name() string       { return "read_lease" }
func (OpRegisterNode) Name() string    { return "register" }
func (OpHeartbeat) Name() string       { return "heartbeat" }
func (OpDeregisterNode) Name() string  { return "deregister" }
func (OpUpdateNode) Name() string      { return "update_node" }
func (OpListNodes) Name() string       { return "list_nodes" }
func (OpReadState) Name() string       { return "read_state" }
func (OpReadAssignments) Name() string { return "read_assignments" }
func (OpApply) Name() string           { return "apply" }
func (OpAckRelease) Name() string      { return "ack_release" }
func (OpGiveBack) Name() string        { return "give_back" }

func (o OpAcquireLease) Do(ctx context.Context, s Store) (any, error) {
	return s.AcquireLease(ctx, o.Key, o.Owner, o.TTL)
}
func (o OpRenewLease) Do(ctx context.Context, s Store) (any, error) {
	return s.RenewLease(ctx, o.Key, o.Owner, o.Epoch, o.TTL)
}
func (o OpReleaseLease) Do(ctx context.Context, s Store) (any, error) {
	return s.ReleaseLease(ctx, o.Key, o.Owner, o.Epoch)
}
func (o OpReadLease) Do(ctx context.Context, s Store) (any, error) {
	return s.ReadLease(ctx, o.Key)
}
func (o OpRegisterNode) Do(ctx context.Context, s Store) (any, error) {
	return s.RegisterNode(ctx, o.Spec)
}
func (o OpHeartbeat) Do(ctx context.Context, s Store) (any, error) {
	return s.Heartbeat(ctx, o.ID, o.Incarnation, o.Known)
}
func (o OpDeregisterNode) Do(ctx context.Context, s Store) (any, error) {
	return s.DeregisterNode(ctx, o.ID, o.Incarnation)
}
func (o OpUpdateNode) Do(ctx context.Context, s Store) (any, error) {
	return s.UpdateNode(ctx, o.ID, o.Update)
}
func (o OpListNodes) Do(ctx context.Context, s Store) (any, error) { return s.ListNodes(ctx) }
func (o OpReadState) Do(ctx context.Context, s Store) (any, error) {
	return s.ReadState(ctx, o.Since)
}
func (o OpReadAssignments) Do(ctx context.Context, s Store) (any, error) {
	return s.ReadAssignments(ctx, o.Since)
}
func (o OpApply) Do(ctx context.Context, s Store) (any, error) { return s.Apply(ctx, o.Batch) }
func (o OpAckRelease) Do(ctx context.Context, s Store) (any, error) {
	return s.AckRelease(ctx, o.Ack)
}
func (o OpGiveBack) Do(ctx context.Context, s Store) (any, error) {
	return s.GiveBack(ctx, o.GiveBack)
}
