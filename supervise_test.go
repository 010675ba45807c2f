package helix

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/helixcoord/helix/engine"
)

// Supervision through the driver, on a mock clock: failed handlers restart with the
// same generation after the configured backoff; repeated failures give the partition
// back and it runs elsewhere; Alive waits for the deadline to move.

// supObserver counts failures by reason and restarts.
type supObserver struct {
	NopObserver
	mu       sync.Mutex
	failures map[string]int
	restarts int
}

func (o *supObserver) HandlerFailed(node string, p Partition, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failures[reason]++
}

func (o *supObserver) Event(node string, e engine.Event) {
	if e.Kind == "partition_restarted" {
		o.mu.Lock()
		o.restarts++
		o.mu.Unlock()
	}
}

func (o *supObserver) counts() (map[string]int, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := map[string]int{}
	for k, v := range o.failures {
		m[k] = v
	}
	return m, o.restarts
}

// addWith starts a node with its own config, handler and options in c.
func (c *testCluster) addWith(cfg Config, h Handler, opts ...Option) *Node {
	c.t.Helper()
	fs := &flakyStore{Store: c.store}
	opts = append([]Option{WithClock(c.clk), WithLogger(quietLogger()), WithSeed(uint64(len(c.nodes) + 1)), WithStopTimeout(time.Second)}, opts...)
	node, err := NewNode(cfg, fs, h, opts...)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- node.Run(ctx) }()
	c.nodes = append(c.nodes, node)
	c.stores = append(c.stores, fs)
	c.stop = append(c.stop, cancel)
	c.done = append(c.done, done)
	c.exited = append(c.exited, false)
	return node
}

// attempt is one start of a handler, on the mock clock.
type attempt struct {
	at  time.Time
	gen uint64
}

func TestHandlerFailuresRestartWithBackoff(t *testing.T) {
	c := newTestCluster(t, 0, engine.TaskList{Domain: "d", Name: "t", Partitions: 1})
	var mu sync.Mutex
	var attempts []attempt
	h := HandlerFunc(func(ctx context.Context, p Partition) error {
		mu.Lock()
		attempts = append(attempts, attempt{c.clk.Now(), p.Generation})
		k := len(attempts)
		mu.Unlock()
		switch k {
		case 1:
			return errors.New("boom")
		case 2:
			return nil // returning early is a failure too
		case 3:
			panic("kaboom")
		}
		<-ctx.Done()
		return nil
	})
	obs := &supObserver{failures: map[string]int{}}
	cfg := Config{NodeID: "n1", RestartBase: time.Second, RestartMax: time.Minute, RestartJitter: 0.1, GiveBackAfter: NeverGiveBack}
	n := c.addWith(cfg, h, WithObserver(obs))
	c.until("four attempts", time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(attempts) == 4
	})
	mu.Lock()
	got := append([]attempt(nil), attempts...)
	mu.Unlock()
	for i := 1; i < len(got); i++ {
		if got[i].gen != got[0].gen {
			t.Errorf("attempt %d at generation %d, want %d (restarts keep the generation)", i+1, got[i].gen, got[0].gen)
		}
		gap := got[i].at.Sub(got[i-1].at)
		base := time.Second << (i - 1)
		lo, hi := time.Duration(float64(base)*0.9), time.Duration(float64(base)*1.1)+50*time.Millisecond
		if gap < lo || gap > hi {
			t.Errorf("restart %d after %v, want in [%v, %v]", i, gap, lo, hi)
		}
	}
	failures, restarts := obs.counts()
	if failures[FailureError] != 1 || failures[FailureReturned] != 1 || failures[FailurePanic] != 1 || restarts != 3 {
		t.Errorf("failures %v, restarts %d; want one of each reason and 3 restarts", failures, restarts)
	}
	states := PartitionStates(n.Status().NodeState)
	if len(states) != 1 || states[0].State != "running" || states[0].Failures != 3 {
		t.Errorf("partition states %+v, want running after 3 failures", states)
	}
}

func TestFailingPartitionIsGivenBackAndRunsElsewhere(t *testing.T) {
	c := newTestCluster(t, 0, engine.TaskList{Domain: "d", Name: "t", Partitions: 2})
	cfg := func(id string) Config {
		return Config{NodeID: id, RestartBase: 100 * time.Millisecond, RestartMax: time.Second, GiveBackAfter: 3}
	}
	var bad sync.Map // partitions whose handler failed on n1
	c.addWith(cfg("n1"), HandlerFunc(func(ctx context.Context, p Partition) error {
		bad.Store(p.ID, true)
		return fmt.Errorf("%v: this host lacks a dependency", p.ID)
	}))
	c.addWith(cfg("n2"), c.tr.handler("n2"))
	c.until("both partitions running on n2", time.Minute, func() bool {
		return c.tr.owners()["n2"] == 2
	})
	// It stays that way: n1 is cooling down for both, and nothing bounces back to it.
	starts := c.nodes[1].Status().Handlers
	for range 100 {
		c.clk.Add(100 * time.Millisecond)
		c.waitIdle()
	}
	if got := c.tr.owners()["n2"]; got != 2 || c.nodes[1].Status().Handlers != starts {
		t.Fatalf("after 10s more: n2 runs %d partitions", got)
	}
	st := c.nodes[0].Status()
	given := 0
	for _, ps := range PartitionStates(st.NodeState) {
		if ps.State == "given_back" {
			given++
		}
	}
	n := 0
	bad.Range(func(any, any) bool { n++; return true })
	if given != n || n == 0 {
		t.Fatalf("n1 reports %d partitions given back, its handler failed on %d", given, n)
	}
	c.tr.check(t)
}

// Alive waits while the liveness deadline is too close, and returns true once a
// heartbeat moves it on; false once the context is done.
func TestAliveWaitsForTheDeadline(t *testing.T) {
	clk := clock.NewMock()
	var dl atomic.Pointer[time.Time]
	set := func(t time.Time) { dl.Store(&t) }
	set(clk.Now().Add(time.Second))
	cctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	ctx := &partitionCtx{Context: cctx, deadline: &dl, clk: clk}
	derived := context.WithValue(ctx, struct{}{}, 1) // Alive finds the guard through derived contexts
	if !Alive(derived, 500*time.Millisecond) {
		t.Fatal("Alive false with 1s left for a 500ms unit")
	}
	res := make(chan bool, 1)
	go func() { res <- Alive(derived, 2*time.Second) }()
	for range 20 {
		clk.Add(10 * time.Millisecond)
		select {
		case r := <-res:
			t.Fatalf("Alive returned %v with the deadline too close", r)
		default:
		}
	}
	set(clk.Now().Add(5 * time.Second)) // a heartbeat
	waitResult(t, clk, res, true)
	go func() { res <- Alive(derived, 10*time.Second) }()
	cancel(&StopError{Reason: engine.StopRevoked})
	waitResult(t, clk, res, false)
}

func waitResult(t *testing.T, clk *clock.Mock, res chan bool, want bool) {
	t.Helper()
	// Alive polls on the mock clock: move it on until it answers (bounded).
	for range 100000 {
		select {
		case r := <-res:
			if r != want {
				t.Fatalf("Alive = %v, want %v", r, want)
			}
			return
		default:
			clk.Add(10 * time.Millisecond)
			runtime.Gosched()
		}
	}
	t.Fatal("Alive did not return")
}
