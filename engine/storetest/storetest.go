// Package storetest is the conformance suite of engine.Store: every backend (the
// in-memory reference engine/memstore, mysqlstore on MySQL and MariaDB) runs Run and must
// pass it unchanged.
//
// The suite has two halves:
//   - table tests, one per rule of the contract in engine/store.go: each error case checks
//     what the caller sees (the sentinel, or the field a *ValidationError names) and that
//     nothing observable changed; positive cases walk the lease, node, task-list and
//     assignment lifecycles;
//   - a rapid state-machine test that runs random interleavings of every operation from
//     several owners and nodes (and, on a manual clock, time advancing) against the store
//     and against a plain in-test model, comparing every reply.
//
// It is backend-agnostic: store time is read from replies' Now, and timestamps are only
// compared within one backend (durations and ordering), never with the test's clock. A
// backend on real time (MySQL's UTC_TIMESTAMP) implements Clock.Advance by sleeping; the
// suite keeps its waits short (TTLs of 100 ms) so such a run stays well under 30 s.
//
// This is a test-helper package: production code never imports it.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
)

// Clock lets the suite make store time pass.
type Clock interface {
	// Advance makes at least d of store time pass before it returns: a manual clock moves
	// by exactly d; a real-time backend sleeps (slightly more than) d.
	Advance(d time.Duration)
	// Manual reports whether store time moves only inside Advance. Only then does the
	// suite check exact boundaries (a lease is expired at exactly ExpiresAt) and run
	// time-advancing steps in the state-machine test; on real time it checks ordering and
	// lower bounds only.
	Manual() bool
}

// ManualClock is a Clock for stores that take their time from a function (memstore):
// pass its Now to the store. Safe for concurrent use.
type ManualClock struct {
	mu sync.Mutex
	t  time.Time
}

// NewManualClock returns a manual clock reading start.
func NewManualClock(start time.Time) *ManualClock { return &ManualClock{t: start} }

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Manual is true.
func (c *ManualClock) Manual() bool { return true }

// RealClock is the Clock of a backend whose store time is real time (a database
// server's clock): Advance sleeps. The extra millisecond covers timestamp rounding.
type RealClock struct{}

// Advance sleeps for d plus one millisecond.
func (RealClock) Advance(d time.Duration) { time.Sleep(d + time.Millisecond) }

// Manual is false.
func (RealClock) Manual() bool { return false }

// Durations the suite uses. Short ones are what the tests wait out (by Advance); long
// ones never run out during a test, even on a slow real-time backend.
const (
	short = 100 * time.Millisecond
	wait  = short + 50*time.Millisecond // Advance(wait) outlives anything of duration short
	long  = 10 * time.Minute
	// mid is for a registration that must stay live across several calls before it is
	// waited out: 100 ms is too tight for that on a loaded real-time backend.
	mid     = time.Second
	midWait = mid + 50*time.Millisecond
)

// Run runs the whole suite. newStore must return an empty store and the Clock of its
// store time; it is called once per subtest (and once per state-machine run).
func Run(t *testing.T, newStore func(t *testing.T) (engine.Store, Clock)) {
	t.Run("Errors", func(t *testing.T) { testErrors(t, newStore) })
	t.Run("Lease", func(t *testing.T) { testLease(t, newStore) })
	t.Run("Nodes", func(t *testing.T) { testNodes(t, newStore) })
	t.Run("DrainFlagReachesHeartbeat", func(t *testing.T) { testDrainFlagReachesHeartbeat(t, newStore) })
	t.Run("TaskLists", func(t *testing.T) { testTaskLists(t, newStore) })
	t.Run("Assignments", func(t *testing.T) { testAssignments(t, newStore) })
	t.Run("StateMachine", func(t *testing.T) { testStateMachine(t, newStore) })
	t.Run("Identity", func(t *testing.T) { testIdentity(t, newStore) })
	t.Run("GiveBack", func(t *testing.T) { testGiveBack(t, newStore) })
}

// harness wraps a store with must-succeed helpers that fail the test on error.
type harness struct {
	t   *testing.T
	s   engine.Store
	c   Clock
	ctx context.Context
}

func newHarness(t *testing.T, newStore func(t *testing.T) (engine.Store, Clock)) *harness {
	t.Helper()
	s, c := newStore(t)
	return &harness{t: t, s: s, c: c, ctx: context.Background()}
}

func (h *harness) must(err error, what string) {
	h.t.Helper()
	if err != nil {
		h.t.Fatalf("%s: unexpected error: %v", what, err)
	}
}

func (h *harness) acquire(key, owner string, ttl time.Duration) engine.LeaseReply {
	h.t.Helper()
	r, err := h.s.AcquireLease(h.ctx, key, owner, ttl)
	h.must(err, fmt.Sprintf("AcquireLease(%q, %q)", key, owner))
	return r
}

func (h *harness) release(key, owner string, epoch uint64) {
	h.t.Helper()
	_, err := h.s.ReleaseLease(h.ctx, key, owner, epoch)
	h.must(err, fmt.Sprintf("ReleaseLease(%q, %q, %d)", key, owner, epoch))
}

func (h *harness) register(id string, capacity int, labels ...engine.Label) uint64 {
	h.t.Helper()
	r, err := h.s.RegisterNode(h.ctx, engine.NodeSpec{ID: id, Capacity: capacity, Labels: labels})
	h.must(err, fmt.Sprintf("RegisterNode(%q)", id))
	return r.Incarnation
}

func (h *harness) heartbeat(id string, inc, known uint64) engine.HeartbeatReply {
	h.t.Helper()
	r, err := h.s.Heartbeat(h.ctx, id, inc, known)
	h.must(err, fmt.Sprintf("Heartbeat(%q, %d)", id, inc))
	return r
}

func (h *harness) putTaskList(domain, name string, n int) {
	h.t.Helper()
	_, err := h.s.PutTaskList(h.ctx, engine.TaskList{Domain: domain, Name: name, Partitions: n})
	h.must(err, fmt.Sprintf("PutTaskList(%s/%s, %d)", domain, name, n))
}

func (h *harness) apply(b engine.Batch) engine.ApplyReply {
	h.t.Helper()
	r, err := h.s.Apply(h.ctx, b)
	h.must(err, "Apply")
	return r
}

func (h *harness) rows(since uint64) engine.AssignmentsReply {
	h.t.Helper()
	r, err := h.s.ReadAssignments(h.ctx, since)
	h.must(err, "ReadAssignments")
	return r
}

// row returns the current row of p; it fails the test if there is none.
func (h *harness) row(p engine.PartitionID) engine.Assignment {
	h.t.Helper()
	for _, r := range h.rows(0).Assignments {
		if r.Partition == p {
			return r
		}
	}
	h.t.Fatalf("no row for %s", p)
	return engine.Assignment{}
}

func (h *harness) node(id string) engine.NodeInfo {
	h.t.Helper()
	r, err := h.s.ListNodes(h.ctx)
	h.must(err, "ListNodes")
	for _, n := range r.Nodes {
		if n.ID == id {
			return n
		}
	}
	h.t.Fatalf("node %q not listed", id)
	return engine.NodeInfo{}
}

func (h *harness) lease(key string) engine.Lease {
	h.t.Helper()
	r, err := h.s.ReadLease(h.ctx, key)
	h.must(err, fmt.Sprintf("ReadLease(%q)", key))
	return r.Lease
}

func pid(domain, tl string, n int) engine.PartitionID {
	return engine.PartitionID{Domain: domain, TaskList: tl, Partition: n}
}

// sentinels are the error kinds of the contract, in the order kindOf tests them.
var sentinels = []error{
	engine.ErrInvalid, engine.ErrLeaseHeld, engine.ErrLeaseLost, engine.ErrFenced,
	engine.ErrNodeDead, engine.ErrNotFound, engine.ErrConflict, engine.ErrUnavailable,
	engine.ErrNodeInUse,
}

// kindOf names the sentinel err wraps: "ok" for nil, "other" for none of them.
func kindOf(err error) string {
	if err == nil {
		return "ok"
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "other: " + err.Error()
}

// checkErr fails the test unless err is want (a sentinel) or, when want is ErrInvalid and
// field is not empty, a *ValidationError naming field.
func checkErr(t testing.TB, err, want error, field string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v (%s), want %v", err, kindOf(err), want)
	}
	if want == engine.ErrInvalid {
		var ve *engine.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("error %v wraps ErrInvalid but is not a *engine.ValidationError", err)
		}
		if field != "" && ve.Field != field {
			t.Fatalf("validation error %q names field %q, want %q", err, ve.Field, field)
		}
		if ve.Rule == "" {
			t.Fatalf("validation error %q has no rule", err)
		}
	}
}

// dump is everything a caller can observe, with timestamps as Unix nanoseconds so two
// dumps of one backend compare with ==; heartbeat ages are left out (they grow by
// themselves).
type dump struct {
	Leases    []string
	Nodes     []engine.NodeInfo
	Hearts    []int64
	TaskLists []engine.TaskList
	Revision  uint64
	Rows      []engine.Assignment
}

// dumpKeys are the lease keys the suite's tests use.
var dumpKeys = []string{"coord", "spare", "k1", "k2"}

func (h *harness) dump() dump {
	h.t.Helper()
	var d dump
	for _, k := range dumpKeys {
		r, err := h.s.ReadLease(h.ctx, k)
		if errors.Is(err, engine.ErrNotFound) {
			continue
		}
		h.must(err, "ReadLease")
		l := r.Lease
		d.Leases = append(d.Leases, fmt.Sprintf("%s owner=%q epoch=%d status=%d expires=%d", l.Key, l.Owner, l.Epoch, l.Status, l.ExpiresAt.UnixNano()))
	}
	nr, err := h.s.ListNodes(h.ctx)
	h.must(err, "ListNodes")
	for _, n := range nr.Nodes {
		d.Hearts = append(d.Hearts, n.LastHeartbeat.UnixNano())
		n.LastHeartbeat, n.HeartbeatAge = time.Time{}, 0
		if len(n.Labels) == 0 {
			n.Labels = nil
		}
		d.Nodes = append(d.Nodes, n)
	}
	tr, err := h.s.ListTaskLists(h.ctx)
	h.must(err, "ListTaskLists")
	d.TaskLists = tr.TaskLists
	ar := h.rows(0)
	d.Revision, d.Rows = ar.Revision, ar.Assignments
	return d
}

func (h *harness) sameDump(before dump, what string) {
	h.t.Helper()
	after := h.dump()
	if fmt.Sprintf("%+v", before) != fmt.Sprintf("%+v", after) {
		h.t.Fatalf("%s changed the store:\nbefore %+v\nafter  %+v", what, before, after)
	}
}

// checkSorted fails unless rows are strictly sorted by partition.
func checkSorted(t testing.TB, rows []engine.Assignment) {
	t.Helper()
	if !slices.IsSortedFunc(rows, func(a, b engine.Assignment) int { return engine.ComparePartitions(a.Partition, b.Partition) }) {
		t.Fatalf("rows not sorted by partition: %v", rows)
	}
	for i := 1; i < len(rows); i++ {
		if rows[i-1].Partition == rows[i].Partition {
			t.Fatalf("partition %s listed twice", rows[i].Partition)
		}
	}
}

// approx reports whether got is within tol of want.
func approx(got, want, tol time.Duration) bool {
	d := got - want
	return d >= -tol && d <= tol
}
