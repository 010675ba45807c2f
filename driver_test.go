package helix

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/engine/memstore"
)

// These tests pin the driver's own duties with a scripted state machine, independent of
// the protocol: store calls and their replies, wake-ups, the order of stops and steps,
// the liveness watchdog, and shutdown.

// script is a machine whose Step calls a test function.
type script struct {
	mu    sync.Mutex
	st    engine.NodeState
	step  func(now time.Time, in engine.Input) []engine.Effect
	steps []engine.Input
}

func (s *script) Step(now time.Time, in engine.Input) []engine.Effect {
	s.mu.Lock()
	s.steps = append(s.steps, in)
	f := s.step
	s.mu.Unlock()
	return f(now, in)
}

func (s *script) State() engine.NodeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

func (s *script) setState(st engine.NodeState) {
	s.mu.Lock()
	s.st = st
	s.mu.Unlock()
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newScripted(t *testing.T, m *script, store engine.Store, h Handler, clk clock.Clock) *Node {
	t.Helper()
	cfg := engine.Config{NodeID: "n1"}.WithDefaults()
	o := options{clock: clk, logger: quietLogger(), stopTimeout: time.Second}
	o.fill(cfg, time.Unix(0, 0))
	return newNode(cfg, store, h, m, o)
}

// eventually polls cond on the real clock until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

var p0 = engine.PartitionID{Domain: "d", TaskList: "t", Partition: 0}

func TestDriverStoreRequestReplyAndWake(t *testing.T) {
	clk := clock.NewMock()
	store := memstore.New(clk.Now)
	var mu sync.Mutex
	var replies []engine.StoreReply
	ticks := 0
	m := &script{}
	m.step = func(now time.Time, in engine.Input) []engine.Effect {
		mu.Lock()
		defer mu.Unlock()
		switch in := in.(type) {
		case engine.Tick:
			ticks++
			if ticks == 1 {
				return []engine.Effect{
					engine.StoreRequest{ID: 7, Op: engine.OpReadLease{Key: "coordinator"}, Deadline: now.Add(time.Second)},
					engine.WakeAt{At: now.Add(10 * time.Second)},
				}
			}
		case engine.StoreReply:
			replies = append(replies, in)
		}
		return nil
	}
	n := newScripted(t, m, store, HandlerFunc(func(ctx context.Context, p Partition) error { return nil }), clk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()

	eventually(t, "store reply delivered", func() bool { mu.Lock(); defer mu.Unlock(); return len(replies) == 1 })
	mu.Lock()
	r := replies[0]
	mu.Unlock()
	if r.ID != 7 || !errors.Is(r.Err, engine.ErrNotFound) {
		t.Fatalf("reply = %+v, want ID 7 and ErrNotFound (lease never existed)", r)
	}
	clk.Add(9 * time.Second)
	mu.Lock()
	if ticks != 1 {
		t.Fatalf("ticked %d times before the wake-up time, want 1", ticks)
	}
	mu.Unlock()
	clk.Add(time.Second)
	eventually(t, "tick at WakeAt", func() bool { mu.Lock(); defer mu.Unlock(); return ticks == 2 })

	// No Stopped effect is ever emitted by this script: Run must give up after the
	// shutdown bound and say so.
	cancel()
	eventually(t, "Shutdown input", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		_, ok := m.steps[len(m.steps)-1].(engine.Shutdown)
		return ok
	})
	clk.Add(n.o.shutdownTimeout)
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run returned nil although the machine never stopped")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the shutdown bound")
	}
}

// slowStore blocks every call until its context is done.
type slowStore struct{ engine.Store }

func (slowStore) ReadLease(ctx context.Context, key string) (engine.LeaseReply, error) {
	<-ctx.Done()
	return engine.LeaseReply{}, ctx.Err()
}

func TestDriverStoreDeadlineIsUnavailable(t *testing.T) {
	clk := clock.NewMock()
	var mu sync.Mutex
	var got []engine.StoreReply
	m := &script{}
	m.step = func(now time.Time, in engine.Input) []engine.Effect {
		mu.Lock()
		defer mu.Unlock()
		if r, ok := in.(engine.StoreReply); ok {
			got = append(got, r)
		}
		if _, ok := in.(engine.Tick); ok && now.Equal(time.Unix(0, 0)) {
			return []engine.Effect{engine.StoreRequest{ID: 1, Op: engine.OpReadLease{Key: "k"}, Deadline: now.Add(500 * time.Millisecond)}}
		}
		if _, ok := in.(engine.Shutdown); ok {
			return []engine.Effect{engine.Stopped{}}
		}
		return nil
	}
	n := newScripted(t, m, slowStore{memstore.New(clk.Now)}, HandlerFunc(func(ctx context.Context, p Partition) error { return nil }), clk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	eventually(t, "first step", func() bool { m.mu.Lock(); defer m.mu.Unlock(); return len(m.steps) > 0 })
	eventually(t, "request in flight", func() bool { clk.Add(0); return true })
	clk.Add(499 * time.Millisecond)
	mu.Lock()
	if len(got) != 0 {
		t.Fatalf("reply before the deadline: %+v", got)
	}
	mu.Unlock()
	clk.Add(time.Millisecond)
	eventually(t, "timed-out reply", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	if !errors.Is(got[0].Err, engine.ErrUnavailable) || !errors.Is(got[0].Err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrUnavailable wrapping DeadlineExceeded", got[0].Err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestDriverStopCompletesBeforeNextStep(t *testing.T) {
	clk := clock.NewMock()
	release := make(chan struct{})
	var handlerDone sync.WaitGroup
	handlerDone.Add(1)
	var causeSeen engine.StopReason
	h := HandlerFunc(func(ctx context.Context, p Partition) error {
		defer handlerDone.Done()
		<-ctx.Done()
		causeSeen = StopReason(ctx)
		<-release // a slow stop: the driver must wait for it
		return ctx.Err()
	})
	var returnedBeforeStep bool
	var finished sync.WaitGroup
	finished.Add(1)
	phase := 0
	m := &script{}
	m.step = func(now time.Time, in engine.Input) []engine.Effect {
		switch in.(type) {
		case engine.Tick:
			phase++
			switch phase {
			case 1:
				return []engine.Effect{engine.StartPartition{Partition: p0, Generation: 3}}
			case 2:
				return []engine.Effect{engine.StopPartition{Partition: p0, Generation: 3, Reason: engine.StopReleased}, engine.WakeAt{At: now}}
			case 3:
				// The step after the stop: the handler must have returned already.
				finishedCh := make(chan struct{})
				go func() { handlerDone.Wait(); close(finishedCh) }()
				select {
				case <-finishedCh:
					returnedBeforeStep = true
				case <-time.After(100 * time.Millisecond):
				}
				finished.Done()
			}
		case engine.Shutdown:
			return []engine.Effect{engine.Stopped{}}
		}
		return nil
	}
	n := newScripted(t, m, memstore.New(clk.Now), h, clk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	eventually(t, "handler running", func() bool { return n.Status().Handlers == 1 })
	n.poke() // phase 2: stop
	eventually(t, "handler cancelled", func() bool { return n.Status().Handlers == 0 })
	time.Sleep(20 * time.Millisecond) // let a wrong driver run ahead to phase 3
	close(release)
	finished.Wait()
	if !returnedBeforeStep {
		t.Fatal("the driver stepped the machine again before the stopped handler returned")
	}
	if causeSeen != engine.StopReleased {
		t.Fatalf("handler saw stop reason %v, want released", causeSeen)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestDriverWatchdogCancelsWhenLoopIsStuck(t *testing.T) {
	clk := clock.NewMock()
	start := clk.Now()
	liveUntil := start.Add(3 * time.Second)
	stuck := make(chan struct{})
	ctxs := make(chan context.Context, 2)
	h := HandlerFunc(func(ctx context.Context, p Partition) error {
		ctxs <- ctx
		<-ctx.Done()
		return nil
	})
	m := &script{}
	var phase atomic.Int32
	m.step = func(now time.Time, in engine.Input) []engine.Effect {
		if _, ok := in.(engine.Shutdown); ok {
			return []engine.Effect{engine.Stopped{}}
		}
		switch phase.Add(1) {
		case 1:
			m.setState(engine.NodeState{ID: "n1", Registered: true, LivenessUntil: liveUntil,
				Owned: []engine.OwnedPartition{{Partition: p0, Generation: 1}}})
			return []engine.Effect{engine.StartPartition{Partition: p0, Generation: 1}}
		case 2:
			<-stuck // the loop hangs inside a step
		}
		return nil
	}
	n := newScripted(t, m, memstore.New(clk.Now), h, clk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	pctx := <-ctxs
	if d, ok := pctx.Deadline(); !ok || !d.Equal(liveUntil) {
		t.Fatalf("partition ctx deadline = %v, %v; want the liveness deadline %v", d, ok, liveUntil)
	}
	n.poke() // phase 2: the loop gets stuck
	eventually(t, "loop stuck", func() bool { return phase.Load() >= 2 })
	clk.Add(2999 * time.Millisecond)
	if pctx.Err() != nil {
		t.Fatal("partition cancelled before its liveness deadline")
	}
	clk.Add(time.Millisecond)
	eventually(t, "watchdog cancels the partition", func() bool { return pctx.Err() != nil })
	if r := StopReason(pctx); r != engine.StopSelfFenced {
		t.Fatalf("stop reason = %v, want self-fenced", r)
	}
	close(stuck)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestDriverRestartsWhenTheLoopCatchesUp: the watchdog cancelled a partition because the
// loop was behind, and the step that then ran proved the node alive (its liveness
// deadline moved on) while it still owns the partition: the handler is started again
// with the same generation rather than left dead while the partition stays assigned.
func TestDriverRestartsWhenTheLoopCatchesUp(t *testing.T) {
	clk := clock.NewMock()
	start := clk.Now()
	stuck := make(chan struct{})
	ctxs := make(chan context.Context, 4)
	gens := make(chan uint64, 4)
	h := HandlerFunc(func(ctx context.Context, p Partition) error {
		ctxs <- ctx
		gens <- p.Generation
		<-ctx.Done()
		return nil
	})
	m := &script{}
	var phase atomic.Int32
	owned := []engine.OwnedPartition{{Partition: p0, Generation: 1}}
	m.step = func(now time.Time, in engine.Input) []engine.Effect {
		if _, ok := in.(engine.Shutdown); ok {
			return []engine.Effect{engine.Stopped{}}
		}
		switch phase.Add(1) {
		case 1:
			m.setState(engine.NodeState{ID: "n1", Registered: true, LivenessUntil: start.Add(3 * time.Second), Owned: owned})
			return []engine.Effect{engine.StartPartition{Partition: p0, Generation: 1}}
		case 2:
			<-stuck
			// The queued heartbeat reply: the node is alive until later, still owns p0.
			m.setState(engine.NodeState{ID: "n1", Registered: true, LivenessUntil: now.Add(5 * time.Second), Owned: owned})
		}
		return nil
	}
	n := newScripted(t, m, memstore.New(clk.Now), h, clk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	first := <-ctxs
	<-gens
	n.poke()
	eventually(t, "loop stuck", func() bool { return phase.Load() >= 2 })
	clk.Add(3 * time.Second)
	eventually(t, "watchdog cancels", func() bool { return first.Err() != nil })
	close(stuck)
	var second context.Context
	select {
	case second = <-ctxs:
	case <-time.After(5 * time.Second):
		t.Fatal("the partition was not restarted after the loop caught up")
	}
	if g := <-gens; g != 1 {
		t.Fatalf("restarted with generation %d, want the same generation 1", g)
	}
	if second.Err() != nil {
		t.Fatal("restarted partition's context is already cancelled")
	}
	if d, _ := second.Deadline(); !d.After(start.Add(3 * time.Second)) {
		t.Fatalf("restarted partition's deadline %v did not move on", d)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if second.Err() == nil {
		t.Fatal("Run returned with a handler's context still live")
	}
}
