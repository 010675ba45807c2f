// Package engine is helix's pure, deterministic core.
//
// Everything here is sans-IO: no goroutines, no wall clock, no network, no randomness
// except from seeds handed in by the caller, and no iteration over a map without
// sorting first. The same code therefore runs in production (package helix drives it
// with a real clock and a MySQL Store), in the deterministic simulator (package sim
// drives it with virtual time and injected faults) and under property-based tests.
//
// The pieces:
//
//   - the value types of the domain (task lists, partitions, nodes, leases, assignment
//     rows; types.go) and the Store contract every backend implements (store.go), with
//     its input rules (validate.go);
//   - Op, the data form of one Store call, so that a state machine can ask for IO by
//     returning it as an effect (ops.go);
//   - the allocator, a pure function from task lists, live workers and the current
//     assignment to a balanced, sticky, throttled target (alloc.go);
//   - Node, the state machine that plays both roles, coordinator and worker:
//     Step(now, input) returns effects, in the style of etcd-io/raft (node.go, its
//     halves in worker.go and coordinator.go, its inputs and effects in step.go);
//   - Config with defaults and validation (config.go), and the error values (errors.go).
package engine
