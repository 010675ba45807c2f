package helix

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/engine/memstore"
)

// deniedStore fails every heartbeat the way MySQL does when the node's password was
// changed (the error is wrapped by the store as unavailable).
type deniedStore struct{ engine.Store }

var errDenied = errors.New("Error 1045 (28000): Access denied for user 'helix'@'localhost' (using password: YES)")

func (deniedStore) Heartbeat(context.Context, string, uint64, uint64) (engine.HeartbeatReply, error) {
	return engine.HeartbeatReply{}, errors.Join(engine.ErrUnavailable, errDenied)
}

// syncBuffer is a log sink safe for the driver's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(substr string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range strings.Split(s.b.String(), "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// TestStoreErrorsAreWarnedOncePerIntervalWithACount: a store error repeated on every
// heartbeat is logged at WARN with its cause the first time, then counted, and reported
// again with the count once the interval has passed; the status carries the cause.
func TestStoreErrorsAreWarnedOncePerIntervalWithACount(t *testing.T) {
	clk := clock.NewMock()
	var mu sync.Mutex
	replies := 0
	m := &script{}
	m.step = func(now time.Time, in engine.Input) []engine.Effect {
		mu.Lock()
		defer mu.Unlock()
		switch in.(type) {
		case engine.StoreReply:
			replies++
		case engine.Tick:
			return []engine.Effect{engine.StoreRequest{ID: uint64(replies + 1),
				Op: engine.OpHeartbeat{ID: "n1", Incarnation: 1}, Deadline: now.Add(time.Second)}}
		case engine.Shutdown:
			return []engine.Effect{engine.Stopped{}}
		}
		return nil
	}
	var logs syncBuffer
	cfg := engine.Config{NodeID: "n1"}.WithDefaults()
	o := options{clock: clk, logger: slog.New(slog.NewJSONHandler(&logs, nil)), stopTimeout: time.Second}
	o.fill(cfg, time.Unix(0, 0))
	n := newNode(cfg, deniedStore{memstore.New(clk.Now)}, HandlerFunc(func(ctx context.Context, p Partition) error { return nil }), m, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	failures := func(k int) {
		t.Helper()
		for i := 0; i < k; i++ {
			mu.Lock()
			want := replies + 1
			mu.Unlock()
			n.poke()
			eventually(t, "heartbeat failed", func() bool { mu.Lock(); defer mu.Unlock(); return replies >= want })
		}
	}
	failures(5) // the first Tick's request plus five more
	warns := logs.lines(`"msg":"store call failed"`)
	if len(warns) != 1 || !strings.Contains(warns[0], `"level":"WARN"`) || !strings.Contains(warns[0], "Error 1045") ||
		!strings.Contains(warns[0], `"count":1`) {
		t.Fatalf("after 6 identical failures in one interval, want one WARN line with the cause and count 1, got:\n%s", strings.Join(warns, "\n"))
	}
	if s := n.Status(); !strings.Contains(s.Health.LastStoreError, "Access denied") {
		t.Fatalf("status last store error = %q, want the cause", s.Health.LastStoreError)
	}
	clk.Add(defaultStoreErrorLogInterval)
	failures(1)
	warns = logs.lines(`"msg":"store call failed"`)
	if len(warns) != 2 || !strings.Contains(warns[1], `"count":6`) {
		t.Fatalf("after the interval, want a second line counting 6 (5 suppressed + this one), got:\n%s", strings.Join(warns, "\n"))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestUnhealthyWhenTheLoopIsStuck: a loop stuck inside a step (here a machine that
// blocks) makes the node unhealthy once StallAfter has passed, and healthy again when it
// steps.
func TestUnhealthyWhenTheLoopIsStuck(t *testing.T) {
	clk := clock.NewMock()
	stuck := make(chan struct{})
	m := &script{}
	var blocking sync.Once
	blocked := make(chan struct{})
	m.step = func(now time.Time, in engine.Input) []engine.Effect {
		switch in.(type) {
		case engine.Shutdown:
			return []engine.Effect{engine.Stopped{}}
		case engine.Drain:
			blocking.Do(func() { close(blocked) })
			<-stuck
		}
		return nil
	}
	n := newScripted(t, m, memstore.New(clk.Now), HandlerFunc(func(ctx context.Context, p Partition) error { return nil }), clk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	eventually(t, "first step", func() bool { return n.Status().Health.LoopAge >= 0 })
	if why := n.Status().Unhealthy(); why != "" {
		t.Fatalf("healthy loop reported unhealthy: %s", why)
	}
	go func() { _ = n.Drain(context.Background()) }()
	<-blocked
	bound := n.Status().Health.StallAfter
	if bound != n.cfg.LeaseTTL+n.cfg.DeadAfter+time.Second {
		t.Fatalf("StallAfter = %v, want LeaseTTL + DeadAfter + stop timeout", bound)
	}
	clk.Add(bound)
	if why := n.Status().Unhealthy(); why != "" {
		t.Fatalf("unhealthy at exactly the bound: %s", why)
	}
	clk.Add(time.Millisecond)
	if why := n.Status().Unhealthy(); !strings.Contains(why, "node loop stuck") {
		t.Fatalf("Unhealthy() = %q past the bound, want the stuck loop", why)
	}
	close(stuck)
	eventually(t, "healthy after a step", func() bool { return n.Status().Unhealthy() == "" })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestNotReadySaysWhy(t *testing.T) {
	now := time.Unix(100, 0)
	cases := []struct {
		s    Status
		want string
	}{
		{Status{}, "not running"},
		{Status{Running: true}, "not registered"},
		{Status{Running: true, NodeState: engine.NodeState{Registered: true}, HeartbeatAge: 7 * time.Second,
			Health: Health{SelfFenced: true, LastStoreError: "Error 1045"}}, "self-fenced: cannot prove liveness (last successful heartbeat 7s ago); last store error: Error 1045"},
		{Status{Running: true, NodeState: engine.NodeState{Registered: true, Draining: true, LivenessUntil: now}}, "draining"},
		{Status{Running: true, NodeState: engine.NodeState{Registered: true, LivenessUntil: now}}, ""},
		{Status{Running: true, Health: Health{NoWork: true}}, ""}, // coordinator-only: never registers
	}
	for _, c := range cases {
		if got := c.s.NotReady(); !strings.HasPrefix(got, c.want) || (c.want == "") != (got == "") {
			t.Errorf("NotReady(%+v) = %q, want %q", c.s, got, c.want)
		}
	}
}
