package helix

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/engine/memstore"
)

// These tests run real engine.Nodes through the driver against memstore, with time
// driven by a mock clock: partitions start and stop, handlers' contexts are cancelled
// on revoke, self-fence and shutdown, Drain and Run behave as documented, and no
// partition is ever processed by two nodes at once.

// tracker is a handler shared by every node of a test: it records who processes what,
// and flags any moment at which two nodes process the same partition.
type tracker struct {
	clk        clock.Clock
	mu         sync.Mutex
	active     map[engine.PartitionID]string
	lastGen    map[engine.PartitionID]uint64
	stops      map[string]map[engine.StopReason]int // node → reason → count
	violations []string
	ctxs       map[string]map[engine.PartitionID]context.Context
}

func newTracker(clk clock.Clock) *tracker {
	return &tracker{clk: clk, active: map[engine.PartitionID]string{}, lastGen: map[engine.PartitionID]uint64{},
		stops: map[string]map[engine.StopReason]int{}, ctxs: map[string]map[engine.PartitionID]context.Context{}}
}

func (tr *tracker) handler(node string) Handler {
	return HandlerFunc(func(ctx context.Context, p Partition) error {
		tr.mu.Lock()
		if other, ok := tr.active[p.ID]; ok {
			tr.violations = append(tr.violations, fmt.Sprintf("%s started %v while %s processes it", node, p, other))
		}
		if p.Generation <= tr.lastGen[p.ID] && tr.active[p.ID] != node {
			tr.violations = append(tr.violations, fmt.Sprintf("%s started %v: generation not above %d", node, p, tr.lastGen[p.ID]))
		}
		tr.active[p.ID] = node
		tr.lastGen[p.ID] = max(tr.lastGen[p.ID], p.Generation)
		if tr.ctxs[node] == nil {
			tr.ctxs[node] = map[engine.PartitionID]context.Context{}
		}
		tr.ctxs[node][p.ID] = ctx
		tr.mu.Unlock()

		<-ctx.Done()

		tr.mu.Lock()
		if tr.active[p.ID] == node {
			delete(tr.active, p.ID)
		}
		delete(tr.ctxs[node], p.ID)
		if tr.stops[node] == nil {
			tr.stops[node] = map[engine.StopReason]int{}
		}
		tr.stops[node][StopReason(ctx)]++
		tr.mu.Unlock()
		return nil
	})
}

// owners counts active partitions per node.
func (tr *tracker) owners() map[string]int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	m := map[string]int{}
	for _, n := range tr.active {
		m[n]++
	}
	return m
}

func (tr *tracker) stopsOf(node string, r engine.StopReason) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.stops[node][r]
}

func (tr *tracker) check(t *testing.T) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, v := range tr.violations {
		t.Error(v)
	}
}

// flakyStore fails every call with ErrUnavailable while cut.
type flakyStore struct {
	engine.Store
	cut atomic.Bool
}

var errInjected = fmt.Errorf("%w: injected outage", engine.ErrUnavailable)

func (f *flakyStore) down() bool { return f.cut.Load() }

func (f *flakyStore) AcquireLease(ctx context.Context, key, owner string, ttl time.Duration) (engine.LeaseReply, error) {
	if f.down() {
		return engine.LeaseReply{}, errInjected
	}
	return f.Store.AcquireLease(ctx, key, owner, ttl)
}
func (f *flakyStore) RenewLease(ctx context.Context, key, owner string, epoch uint64, ttl time.Duration) (engine.LeaseReply, error) {
	if f.down() {
		return engine.LeaseReply{}, errInjected
	}
	return f.Store.RenewLease(ctx, key, owner, epoch, ttl)
}
func (f *flakyStore) ReleaseLease(ctx context.Context, key, owner string, epoch uint64) (engine.LeaseReply, error) {
	if f.down() {
		return engine.LeaseReply{}, errInjected
	}
	return f.Store.ReleaseLease(ctx, key, owner, epoch)
}
func (f *flakyStore) RegisterNode(ctx context.Context, spec engine.NodeSpec) (engine.RegisterReply, error) {
	if f.down() {
		return engine.RegisterReply{}, errInjected
	}
	return f.Store.RegisterNode(ctx, spec)
}
func (f *flakyStore) Heartbeat(ctx context.Context, id string, inc uint64, known uint64) (engine.HeartbeatReply, error) {
	if f.down() {
		return engine.HeartbeatReply{}, errInjected
	}
	return f.Store.Heartbeat(ctx, id, inc, known)
}
func (f *flakyStore) DeregisterNode(ctx context.Context, id string, inc uint64) (engine.Reply, error) {
	if f.down() {
		return engine.Reply{}, errInjected
	}
	return f.Store.DeregisterNode(ctx, id, inc)
}
func (f *flakyStore) UpdateNode(ctx context.Context, id string, u engine.NodeUpdate) (engine.Reply, error) {
	if f.down() {
		return engine.Reply{}, errInjected
	}
	return f.Store.UpdateNode(ctx, id, u)
}
func (f *flakyStore) ReadState(ctx context.Context, since uint64) (engine.StateReply, error) {
	if f.down() {
		return engine.StateReply{}, errInjected
	}
	return f.Store.ReadState(ctx, since)
}
func (f *flakyStore) Apply(ctx context.Context, b engine.Batch) (engine.ApplyReply, error) {
	if f.down() {
		return engine.ApplyReply{}, errInjected
	}
	return f.Store.Apply(ctx, b)
}
func (f *flakyStore) AckRelease(ctx context.Context, a engine.Ack) (engine.Reply, error) {
	if f.down() {
		return engine.Reply{}, errInjected
	}
	return f.Store.AckRelease(ctx, a)
}

// testCluster runs nodes on one memstore with a mock clock.
type testCluster struct {
	t      *testing.T
	clk    *clock.Mock
	store  *memstore.Store
	tr     *tracker
	nodes  []*Node
	stores []*flakyStore
	stop   []context.CancelFunc
	done   []chan error
	exited []bool
}

func newTestCluster(t *testing.T, n int, tls ...engine.TaskList) *testCluster {
	t.Helper()
	clk := clock.NewMock()
	clk.Set(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c := &testCluster{t: t, clk: clk, store: memstore.New(clk.Now), tr: newTracker(clk)}
	for _, tl := range tls {
		if _, err := c.store.PutTaskList(context.Background(), tl); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		c.add(fmt.Sprintf("n%d", i+1))
	}
	t.Cleanup(c.shutdownAll)
	return c
}

func (c *testCluster) add(id string) *Node {
	c.t.Helper()
	return c.addWith(Config{NodeID: id}, c.tr.handler(id))
}

// waitIdle waits (real time, bounded) until no running node has anything queued.
func (c *testCluster) waitIdle() {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		idle := true
		for i, n := range c.nodes {
			select {
			case <-n.loopDone:
				continue // Run's loop has exited: a call it abandoned stays counted forever
			default:
			}
			if !c.exited[i] && !n.idle() {
				idle = false
			}
		}
		if idle {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatal("nodes did not settle within 5s of real time")
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// until advances the mock clock in small steps until cond holds, failing after budget
// of virtual time.
func (c *testCluster) until(what string, budget time.Duration, cond func() bool) {
	c.t.Helper()
	const step = 50 * time.Millisecond
	for spent := time.Duration(0); ; spent += step {
		c.waitIdle()
		c.reap()
		if cond() {
			return
		}
		if spent > budget {
			c.t.Fatalf("after %v of virtual time: still waiting for %s (owners %v)", budget, what, c.tr.owners())
		}
		c.clk.Add(step)
	}
}

// reap notes nodes whose Run returned.
func (c *testCluster) reap() {
	for i := range c.nodes {
		if c.exited[i] {
			continue
		}
		select {
		case err := <-c.done[i]:
			c.exited[i] = true
			c.done[i] <- err // keep it for whoever asks
		default:
		}
	}
}

func (c *testCluster) shutdownAll() {
	for _, cancel := range c.stop {
		cancel()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.reap()
		all := true
		for _, e := range c.exited {
			all = all && e
		}
		if all || time.Now().After(deadline) {
			return
		}
		c.clk.Add(100 * time.Millisecond)
	}
}

func balanced(owners map[string]int, want map[string]int) bool {
	for id, n := range want {
		if owners[id] != n {
			return false
		}
	}
	total := 0
	for _, n := range owners {
		total += n
	}
	sum := 0
	for _, n := range want {
		sum += n
	}
	return total == sum
}

var tl12 = engine.TaskList{Domain: "d", Name: "t", Partitions: 12}

func TestNewNodeNamesBadConfig(t *testing.T) {
	_, err := NewNode(Config{}, memstore.New(time.Now), HandlerFunc(func(context.Context, Partition) error { return nil }))
	var ve *engine.ValidationError
	if !errors.As(err, &ve) || ve.Field != "config.NodeID" {
		t.Fatalf("err = %v, want a ValidationError on config.NodeID", err)
	}
	_, err = NewNode(Config{NodeID: "a"}, nil, HandlerFunc(func(context.Context, Partition) error { return nil }))
	if !errors.As(err, &ve) || ve.Field != "store" {
		t.Fatalf("err = %v, want a ValidationError on store", err)
	}
}

func TestPartitionsStartBalancedAndMoveOnDrain(t *testing.T) {
	c := newTestCluster(t, 3, tl12)
	c.until("12 partitions, 4 per node", 30*time.Second, func() bool {
		return balanced(c.tr.owners(), map[string]int{"n1": 4, "n2": 4, "n3": 4})
	})
	for _, n := range c.nodes {
		if got := n.Status().Handlers; got != 4 {
			t.Fatalf("%s runs %d handlers, want 4", n.ID(), got)
		}
	}

	// Drain n3: its partitions are revoked (handoff) and start on n1 and n2.
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		drained <- c.nodes[2].Drain(ctx)
	}()
	c.until("n3 drained and its partitions on n1, n2", 30*time.Second, func() bool {
		return len(drained) == 1 && balanced(c.tr.owners(), map[string]int{"n1": 6, "n2": 6})
	})
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if got := c.tr.stopsOf("n3", engine.StopReleased); got != 4 {
		t.Fatalf("n3 stopped %d partitions as released, want 4 (stops: %v)", got, c.tr.stops)
	}
	if st := c.nodes[2].State(); !st.Drained || len(st.Owned) != 0 {
		t.Fatalf("n3 state after drain: drained=%v owned=%d", st.Drained, len(st.Owned))
	}

	// Undrain: n3 takes its share back.
	if err := c.nodes[2].Undrain(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.until("rebalanced after undrain", 30*time.Second, func() bool {
		return balanced(c.tr.owners(), map[string]int{"n1": 4, "n2": 4, "n3": 4})
	})
	c.tr.check(t)
}

func TestSelfFenceWhenStoreIsUnreachable(t *testing.T) {
	c := newTestCluster(t, 2, engine.TaskList{Domain: "d", Name: "t", Partitions: 8})
	c.until("4 partitions per node", 30*time.Second, func() bool {
		return balanced(c.tr.owners(), map[string]int{"n1": 4, "n2": 4})
	})
	// Cut the node that is not the coordinator, so the other one keeps deciding.
	victim, survivor := 1, 0
	if c.nodes[1].State().Coordinator {
		victim, survivor = 0, 1
	}
	vid, sid := c.nodes[victim].ID(), c.nodes[survivor].ID()
	c.tr.mu.Lock()
	var vctxs []context.Context
	for _, ctx := range c.tr.ctxs[vid] {
		vctxs = append(vctxs, ctx)
	}
	c.tr.mu.Unlock()
	liveUntil := c.nodes[victim].State().LivenessUntil
	c.stores[victim].cut.Store(true)

	c.until("the survivor owns everything", 30*time.Second, func() bool {
		return balanced(c.tr.owners(), map[string]int{sid: 8})
	})
	if got := c.tr.stopsOf(vid, engine.StopSelfFenced); got != 4 {
		t.Fatalf("%s self-fenced %d partitions, want 4 (stops: %v)", vid, got, c.tr.stops)
	}
	for _, ctx := range vctxs {
		if r := StopReason(ctx); r != engine.StopSelfFenced {
			t.Fatalf("victim's partition context: stop reason %v, want self-fenced", r)
		}
		if d, ok := ctx.Deadline(); !ok || d.Before(liveUntil) {
			t.Fatalf("victim's partition context deadline %v, %v: want the liveness deadline ≥ %v", d, ok, liveUntil)
		}
	}

	// Heal: the victim registers again (new incarnation) and gets its share back.
	c.stores[victim].cut.Store(false)
	c.until("rebalanced after the outage", 30*time.Second, func() bool {
		return balanced(c.tr.owners(), map[string]int{"n1": 4, "n2": 4})
	})
	if inc := c.nodes[victim].State().Incarnation; inc < 2 {
		t.Fatalf("victim incarnation after the outage = %d, want a new one (≥ 2)", inc)
	}
	c.tr.check(t)
}

func TestLivenessDeadlineMovesWithHeartbeats(t *testing.T) {
	c := newTestCluster(t, 1, engine.TaskList{Domain: "d", Name: "t", Partitions: 1})
	c.until("the partition runs", 30*time.Second, func() bool { return c.tr.owners()["n1"] == 1 })
	c.tr.mu.Lock()
	ctx := c.tr.ctxs["n1"][engine.PartitionID{Domain: "d", TaskList: "t", Partition: 0}]
	c.tr.mu.Unlock()
	d1, ok := ctx.Deadline()
	if !ok || !d1.Equal(c.nodes[0].State().LivenessUntil) {
		t.Fatalf("ctx deadline %v, %v; want LivenessUntil %v", d1, ok, c.nodes[0].State().LivenessUntil)
	}
	if !c.clk.Now().Before(d1) {
		t.Fatalf("liveness deadline %v is not in the future (now %v)", d1, c.clk.Now())
	}
	start := c.clk.Now()
	c.until("a later heartbeat moves the deadline", 10*time.Second, func() bool {
		d, _ := ctx.Deadline()
		return d.After(d1) && c.clk.Since(start) > 2*time.Second
	})
	d2, _ := ctx.Deadline()
	if !d2.Equal(c.nodes[0].State().LivenessUntil) {
		t.Fatalf("ctx deadline %v differs from LivenessUntil %v", d2, c.nodes[0].State().LivenessUntil)
	}
	if ctx.Err() != nil {
		t.Fatal("partition context cancelled while heartbeats succeed")
	}
	if age := c.nodes[0].Status().HeartbeatAge; age < 0 || age > c.nodes[0].Config().Heartbeat+time.Second {
		t.Fatalf("heartbeat age %v, want within one heartbeat interval", age)
	}
}

func TestShutdownHandsOffThenRunReturns(t *testing.T) {
	c := newTestCluster(t, 2, engine.TaskList{Domain: "d", Name: "t", Partitions: 6})
	c.until("3 partitions per node", 30*time.Second, func() bool {
		return balanced(c.tr.owners(), map[string]int{"n1": 3, "n2": 3})
	})
	// n2 shuts down: its partitions are handed to n1 gracefully, then Run returns nil.
	c.stop[1]()
	c.until("n2 exited and n1 owns all", 30*time.Second, func() bool {
		return c.exited[1] && balanced(c.tr.owners(), map[string]int{"n1": 6})
	})
	if err := <-c.done[1]; err != nil {
		t.Fatalf("n2 Run: %v", err)
	}
	if got := c.tr.stopsOf("n2", engine.StopReleased); got != 3 {
		t.Fatalf("n2 handed off %d partitions gracefully, want 3 (stops %v)", got, c.tr.stops)
	}
	if s := c.nodes[1].Status(); s.Running || s.Handlers != 0 || !s.Stopped {
		t.Fatalf("n2 after Run: running=%v handlers=%d stopped=%v", s.Running, s.Handlers, s.Stopped)
	}
	if err := c.nodes[1].Drain(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Drain after Run returned: %v, want ErrNotRunning", err)
	}

	// n1, alone, shuts down: nobody to hand off to; its handlers stop for shutdown.
	c.stop[0]()
	c.until("n1 exited", 30*time.Second, func() bool { return c.exited[0] })
	if err := <-c.done[0]; err != nil {
		t.Fatalf("n1 Run: %v", err)
	}
	if got := c.tr.stopsOf("n1", engine.StopShutdown); got != 6 {
		t.Fatalf("n1 stopped %d partitions for shutdown, want 6 (stops %v)", got, c.tr.stops)
	}
	if len(c.tr.owners()) != 0 {
		t.Fatalf("handlers still running after every Run returned: %v", c.tr.owners())
	}
	// The lease was released and both nodes deregistered.
	nodes, _ := c.store.ListNodes(context.Background())
	for _, n := range nodes.Nodes {
		if n.Status != engine.NodeDead {
			t.Fatalf("node %s still %v after shutdown", n.ID, n.Status)
		}
	}
	c.tr.check(t)
}
