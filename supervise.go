package helix

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/helixcoord/helix/engine"
)

// Supervision, the driver's side. A handler that returns before its partition's
// context is done, or panics, has failed: the driver reports it to the state machine
// (engine.PartitionFailed), which restarts it after a backoff or gives the partition
// back (engine/supervise.go has the policy; Config has its knobs).

// Failure reasons, as helix_handler_failures_total{reason} counts them.
const (
	FailureError    = "error"    // Process returned a non-nil error before ctx was done
	FailureReturned = "returned" // Process returned nil before ctx was done
	FailurePanic    = "panic"    // Process panicked
)

// NeverGiveBack as Config.GiveBackAfter: restart a failing handler forever.
const NeverGiveBack = engine.NeverGiveBack

// SupervisionObserver is an optional extension of Observer: a node whose observer
// implements it reports every handler failure (reason is one of the Failure
// constants). Restarts are Events of kind "partition_restarted".
type SupervisionObserver interface {
	HandlerFailed(node string, p Partition, reason string)
}

// failures is the queue of handler failures waiting for the loop. Handlers report into
// it without blocking: a handler that fails while the loop is stopping it (and waits for
// it to return) must not wait for the loop.
type failures struct {
	mu   sync.Mutex
	q    []engine.PartitionFailed
	sig  chan struct{} // buffered 1: something is queued
	init sync.Once
}

func (f *failures) signal() chan struct{} {
	f.init.Do(func() { f.sig = make(chan struct{}, 1) })
	return f.sig
}

func (f *failures) push(pf engine.PartitionFailed) {
	f.mu.Lock()
	f.q = append(f.q, pf)
	f.mu.Unlock()
	select {
	case f.signal() <- struct{}{}:
	default:
	}
}

func (f *failures) take() []engine.PartitionFailed {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.q
	f.q = nil
	return q
}

// runHandler calls Process, turning a panic into a failure, and reports a failure to
// the loop. It runs in the partition's goroutine.
func (n *Node) runHandler(ctx *partitionCtx, p Partition) {
	reason, detail := n.callHandler(ctx, p)
	if reason == "" {
		return
	}
	if ctx.Err() != nil && reason != FailurePanic {
		return // it returned because it was stopped: not a failure
	}
	n.log.Error("partition handler failed; it will be restarted or given back", "partition", p.ID.String(),
		"generation", p.Generation, "reason", reason, "err", detail)
	if so, ok := n.o.observer.(SupervisionObserver); ok {
		so.HandlerFailed(n.cfg.NodeID, p, reason)
	}
	if ctx.Err() != nil {
		return // a panic while stopping: logged and counted, nothing to restart
	}
	n.inflight.Add(1) // until the loop has stepped it (tests on a mock clock wait for that)
	n.failed.push(engine.PartitionFailed{Partition: p.ID, Generation: p.Generation, Reason: reason + ": " + detail})
}

// callHandler runs Process and classifies how it ended: reason "" when it returned
// after ctx was done (with nil or ctx's own error, or any error: that is logged).
func (n *Node) callHandler(ctx *partitionCtx, p Partition) (reason, detail string) {
	defer func() {
		if r := recover(); r != nil {
			n.log.Error("partition handler panicked", "partition", p.ID.String(), "generation", p.Generation,
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			reason, detail = FailurePanic, fmt.Sprint(r)
		}
	}()
	err := n.h.Process(ctx, p)
	switch {
	case ctx.Err() == nil && err == nil:
		return FailureReturned, "returned before its partition was stopped"
	case ctx.Err() == nil:
		return FailureError, err.Error()
	case err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.Cause(ctx)):
		n.log.Warn("partition handler returned an error", "partition", p.ID.String(), "generation", p.Generation, "err", err)
	}
	return "", ""
}

// stepFailures feeds the queued failures to the state machine (loop goroutine).
func (n *Node) stepFailures() {
	for _, f := range n.failed.take() {
		n.step(f)
		n.inflight.Add(-1)
	}
}

// Alive is the guard a handler calls before each unit of work that takes up to d: it
// returns true when the partition's context is not done and the node's liveness
// deadline (ctx.Deadline()) is more than d away, so that the unit ends before another
// node may be given the partition. While the deadline is too close it waits — for a
// heartbeat to move the deadline on, or for the context to end — and it returns false
// once the context is done: the handler should then return.
//
//	for helix.Alive(ctx, time.Second) {
//		processOneBatch(ctx, p) // at most a second
//	}
//	return nil
//
// On a context that does not come from helix, Alive only checks ctx.Done and
// ctx.Deadline once.
func Alive(ctx context.Context, d time.Duration) bool {
	pc, _ := ctx.Value(partitionCtxKey{}).(*partitionCtx)
	clk := clock.Clock(clock.New())
	if pc != nil && pc.clk != nil {
		clk = pc.clk
	}
	for {
		if ctx.Err() != nil {
			return false
		}
		dl, ok := ctx.Deadline()
		left := time.Duration(1<<63 - 1)
		if ok {
			left = clk.Until(dl)
		}
		if left > d {
			return true
		}
		if pc == nil {
			return false
		}
		// Too close: poll for a later deadline. A heartbeat moves it by a whole
		// interval, so a short poll costs little and waits at most one of them.
		t := clk.Timer(min(max(left/4, time.Millisecond), 50*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

type partitionCtxKey struct{}

// PartitionState is one partition's state on a node, for status pages: "running",
// "restarting" (waiting for NextAttempt), "giving_back" or "given_back" (At).
type PartitionState struct {
	Partition   string    `json:"partition"`
	Generation  uint64    `json:"generation"`
	State       string    `json:"state"`
	Failures    int       `json:"failures,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	At          time.Time `json:"at,omitzero"`
}

// PartitionStates lists the partitions of a node's state with their supervision state:
// owned ones (running), failed ones waiting for a restart or being given back, and the
// ones given back within the cool-down; sorted by partition, then state.
func PartitionStates(s engine.NodeState) []PartitionState {
	sup := map[engine.PartitionID]engine.SupervisedPartition{}
	for _, x := range s.Supervised {
		sup[x.Partition] = x
	}
	out := []PartitionState{}
	for _, o := range s.Owned {
		ps := PartitionState{Partition: o.Partition.String(), Generation: o.Generation, State: "running"}
		if x, ok := sup[o.Partition]; ok && x.Generation == o.Generation {
			ps.Failures, ps.LastError = x.Failures, x.LastError
		}
		out = append(out, ps)
	}
	for _, x := range s.Supervised {
		if x.State == engine.SupRunning {
			continue
		}
		out = append(out, PartitionState{Partition: x.Partition.String(), Generation: x.Generation, State: x.State,
			Failures: x.Failures, NextAttempt: x.NextAttempt, LastError: x.LastError})
	}
	for _, g := range s.GivenBack {
		out = append(out, PartitionState{Partition: g.Partition.String(), Generation: g.Generation, State: "given_back", At: g.At})
	}
	slices.SortFunc(out, func(a, b PartitionState) int {
		if c := strings.Compare(a.Partition, b.Partition); c != 0 {
			return c
		}
		return strings.Compare(a.State, b.State)
	})
	return out
}

// Failing counts the partitions whose handler is not running because it failed on this
// node (restarting or being given back).
func Failing(s engine.NodeState) int {
	n := 0
	for _, x := range s.Supervised {
		if x.State != engine.SupRunning {
			n++
		}
	}
	return n
}
