// Package flaw names the deliberate bugs that the simulator's "teeth" tests switch on to
// prove the simulator catches them. It is internal to the module, and the hooks below are
// called only from tests: production code can neither name nor enable a flaw.
//
// Each flaw is checked in the engine or the in-memory store beside the correct code it
// disables (at one place, or at the few that code spans), so that reading those places
// shows what the flaw breaks.
package flaw

// Set is a set of flaws.
type Set uint64

const (
	// StoreNoEpochCheck: the store applies a fenced batch without checking its epoch. (S2)
	StoreNoEpochCheck Set = 1 << iota
	// StoreAcceptOldIncarnation: the store accepts heartbeats from dead incarnations. (S3)
	StoreAcceptOldIncarnation
	// StoreRenewAfterExpiry: the store renews a lease that has expired. (S1)
	StoreRenewAfterExpiry
	// NodeNoSelfFence: a worker keeps its partitions when its liveness timer runs out. (S3)
	NodeNoSelfFence
	// NodeLeaseFromReply: a holder counts its lease from the reply, not the send. (S1)
	NodeLeaseFromReply
	// NodeAssignBeforeAck: the coordinator re-assigns a releasing partition before the
	// owner acknowledges. (S3)
	NodeAssignBeforeAck
	// NodeIgnoreDrain: the coordinator keeps assigning to draining workers. (L: drain)
	NodeIgnoreDrain
	// AllocUnsortedTieBreak: the allocator breaks ties in input order instead of by id,
	// so the same state listed differently gives a different plan. (determinism)
	AllocUnsortedTieBreak
	// NodeNoStepDownOnFence: the coordinator keeps believing it leads after ErrFenced. (S1)
	NodeNoStepDownOnFence
	// StoreAssignWhileReleasing: the store lets a Releasing row be assigned to a new
	// owner while the old one is alive and has not acknowledged. The store's check is
	// the second line of defence behind the coordinator's, so the teeth test for
	// NodeAssignBeforeAck switches both off. (S3)
	StoreAssignWhileReleasing
)

// Has reports whether every flaw of f is in s.
func (s Set) Has(f Set) bool { return s&f == f }

// Hooks set by the packages that carry flaws (in their init), so tests can switch flaws
// on without those packages exporting anything. Arguments and results are the packages'
// own types behind any, because this package cannot import them.
var (
	// SetNodeFlaws returns a copy of an engine.Config with the flaws set.
	SetNodeFlaws func(cfg any, s Set) any
	// SetStoreFlaws switches flaws on in a *memstore.Store.
	SetStoreFlaws func(store any, s Set)
)
