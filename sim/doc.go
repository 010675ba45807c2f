// Package sim is helix's deterministic simulator. It runs the real engine.Node state
// machines — the code production runs — against the in-memory store (engine/memstore)
// through a simulated network, injects faults, and checks DESIGN.md's invariants after
// every event.
//
// Everything happens on one goroutine, in virtual time: an event queue ordered by time
// and then by a sequence number, so that two events at the same instant run in the order
// they were queued. All randomness comes from one seed, split into a PRNG per component
// (network, faults, swarm, and each node process), so adding a draw in one component
// does not shift the others; the order of list replies, when shuffled, has a seed of its
// own (Options.ShuffleSeed). Nothing reads the wall clock. The same scenario and
// seed therefore give a byte-identical trace at any GOMAXPROCS, with or without -race;
// CheckDeterminism proves it for a seed by running it twice and comparing event logs.
//
// The network: every StoreRequest reaches the store after a latency drawn from the
// scenario's distribution (plus any latency spike), unless it is lost or the node is cut
// off from the store; the store applies it at that instant (store time is virtual time);
// the reply comes back after another draw, unless it is lost (an ambiguous write: applied,
// but the node never learns it) or arrives after the request's deadline (the driver has
// given up). Nodes time their requests out themselves and ask for WakeAt ticks, which the
// simulator delivers on time by each node's own clock: offset + virtual·(1+drift).
//
// Faults: crash and restart (memory lost, id kept), pause (no steps, then resume with
// stale beliefs), clock offset, jumps and drift (within the configured bound and beyond),
// node↔store partitions, latency spikes, lost requests and replies, store outages;
// operator actions: task list create/resize/delete, drain, joins and leaves in bulk,
// graceful shutdown. With Scenario.Swarm each seed draws which faults are on and how often.
//
// The checker (checker.go) runs S1–S4 incrementally after every event and L1–L4 after
// the heal; bounds on failover times are B1 (coordinator) and B2 (workers). A violation
// stops the run; Violation.String prints the seed, the event number, the last events and
// the command that replays it.
package sim
