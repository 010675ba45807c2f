package helix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/helixcoord/helix/engine"
)

// ErrNotRunning is returned by Drain and Undrain when the node's Run has returned.
var ErrNotRunning = errors.New("helix: node is not running")

// machine is what the driver needs of engine.Node; the driver's own tests script one.
type machine interface {
	Step(now time.Time, in engine.Input) []engine.Effect
	State() engine.NodeState
}

// Node is a running helix node: it drives one engine.Node with real goroutines, a
// clock and a Store, and runs the application's Handler per partition.
type Node struct {
	cfg   engine.Config
	store engine.Store
	h     Handler
	o     options
	clk   clock.Clock
	log   *slog.Logger
	m     machine

	replies chan engine.StoreReply
	drains  chan engine.Drain
	wake    chan struct{} // buffered 1: a pending Tick

	started atomic.Bool
	// inflight counts store calls from their start until their reply has been stepped;
	// tests driving a mock clock wait for it to reach zero before moving time on.
	inflight atomic.Int64
	wakes    atomic.Int64  // likewise for queued wake-ups
	loopDone chan struct{} // closed when Run's loop has exited

	// Store calls outlive a Step; they are abandoned (cancelled) when Run returns.
	storeCtx    context.Context
	storeCancel context.CancelFunc
	storeWG     sync.WaitGroup

	mu      sync.Mutex
	state   engine.NodeState
	changed chan struct{} // closed and replaced whenever state changes
	running bool
	lastHB  time.Time // send time of the last successful heartbeat (node clock)

	// Partitions' handlers. The loop adds and removes; the watchdog (a clock timer,
	// running outside the loop) cancels.
	pmu       sync.Mutex
	parts     map[engine.PartitionID]*runningPart
	liveUntil atomic.Pointer[time.Time]
	watchdog  *clock.Timer
	armedAt   time.Time
	fenced    atomic.Bool // the watchdog cancelled something since the last step
	failed    failures    // handler failures for the loop (supervise.go)

	// Owned only by the loop goroutine.
	wakeTimer *clock.Timer
	stopped   bool
	stopErr   error // engine.Stopped.Err: why the node stopped on its own

	// Health (see health.go): when the loop last finished a step, the last store
	// failure, and the rate limiter of store-error log lines.
	health nodeHealth
}

type runningPart struct {
	p          Partition
	cancel     context.CancelCauseFunc
	done       chan struct{}
	selfFenced bool // cancelled by the watchdog, not by the state machine (guarded by pmu)
}

// NewNode validates cfg (after defaults) and returns a node that is not running yet;
// call Run. store is shared by nothing else in the node; h is called once per started
// partition, concurrently for different partitions.
func NewNode(cfg Config, store engine.Store, h Handler, opts ...Option) (*Node, error) {
	if store == nil {
		return nil, engine.Invalid("store", "", "must not be nil")
	}
	if h == nil {
		return nil, engine.Invalid("handler", "", "must not be nil")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	o.fill(cfg, time.Now())
	cfg.Replace = cfg.Replace || o.replace
	cfg, err := withProcess(cfg)
	if err != nil {
		return nil, err
	}
	m, err := engine.NewNode(cfg, o.seed)
	if err != nil {
		return nil, err
	}
	return newNode(cfg, store, h, m, o), nil
}

func newNode(cfg engine.Config, store engine.Store, h Handler, m machine, o options) *Node {
	n := &Node{
		cfg: cfg, store: store, h: h, o: o, clk: o.clock, m: m,
		log:      o.logger.With("node", cfg.NodeID),
		replies:  make(chan engine.StoreReply, 16),
		drains:   make(chan engine.Drain),
		wake:     make(chan struct{}, 1),
		loopDone: make(chan struct{}),
		changed:  make(chan struct{}),
		parts:    map[engine.PartitionID]*runningPart{},
		state:    m.State(),
	}
	n.storeCtx, n.storeCancel = context.WithCancel(context.Background())
	n.health.init(cfg, o)
	return n
}

// ID returns the node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Config returns the node's configuration, defaults filled in.
func (n *Node) Config() Config { return n.cfg }

// Run drives the node until ctx is cancelled, then shuts it down gracefully: it gives
// back its partitions (each handler stopped before its release is acknowledged),
// releases the coordinator lease if it holds it and deregisters. It returns nil once the
// state machine reports it has stopped, or an error if that took longer than the
// shutdown timeout (either way, every handler has been stopped — its context cancelled
// and its return awaited, bounded by the stop timeout — before Run returns). Run may be
// called once.
//
// Run also returns, with an error wrapping engine.ErrNodeInUse (an *engine.NodeInUseError
// naming the holder's host, pid and expiry), when another live process holds the node id
// (see WithReplace), or when this process was replaced by one started with WithReplace.
func (n *Node) Run(ctx context.Context) error {
	if !n.started.CompareAndSwap(false, true) {
		return errors.New("helix: Run called twice")
	}
	n.mu.Lock()
	n.running = true
	n.mu.Unlock()
	n.watchdog = n.clk.AfterFunc(time.Hour, n.watchdogFired)
	n.watchdog.Stop()
	n.log.Info("node starting", "capacity", n.cfg.Capacity, "lease_ttl", n.cfg.LeaseTTL,
		"heartbeat", n.cfg.Heartbeat, "dead_after", n.cfg.DeadAfter)

	var err error
	n.step(engine.Tick{})
	shutdown := ctx.Done()
	var bound <-chan struct{}
	var boundTimer *clock.Timer
loop:
	for !n.stopped {
		select {
		case r := <-n.replies:
			n.step(r)
			n.inflight.Add(-1)
		case <-n.wake:
			n.step(engine.Tick{})
			n.wakes.Add(-1)
		case d := <-n.drains:
			n.step(d)
		case <-n.failed.signal():
			n.stepFailures()
		case <-shutdown:
			shutdown = nil
			n.log.Info("shutting down gracefully", "bound", n.o.shutdownTimeout)
			ch := make(chan struct{})
			boundTimer = n.clk.AfterFunc(n.o.shutdownTimeout, func() { close(ch) })
			bound = ch
			n.step(engine.Shutdown{})
		case <-bound:
			err = fmt.Errorf("helix: node %s: graceful shutdown did not finish within %v", n.cfg.NodeID, n.o.shutdownTimeout)
			break loop
		}
	}
	if err == nil && n.stopErr != nil {
		// Another process holds the node id (it was refused at start, or replaced).
		err = fmt.Errorf("helix: %w", n.stopErr)
	}
	if boundTimer != nil {
		boundTimer.Stop()
	}
	if n.wakeTimer != nil {
		n.wakeTimer.Stop()
	}
	// Whatever the state machine did not stop (only after a timeout) is stopped here:
	// Run returns after every handler's context is cancelled and each has returned or
	// overrun its stop timeout.
	n.stopAll(engine.StopShutdown)
	n.watchdog.Stop()
	n.storeCancel()
	close(n.loopDone)
	n.storeWG.Wait()
	n.mu.Lock()
	n.running = false
	n.bumpLocked()
	n.mu.Unlock()
	if err != nil {
		n.log.Error("node stopped", "err", err)
	} else {
		n.log.Info("node stopped")
	}
	return err
}

// Drain asks the node to give back all its partitions and take no new ones (it stays
// registered and may stay coordinator), and waits until it owns nothing or ctx is done.
// The coordinator moves partitions only to other workers: a node that is the only one
// keeps its partitions, and Drain waits until ctx is done. Called before Run, it
// waits for Run to start.
func (n *Node) Drain(ctx context.Context) error {
	if err := n.send(ctx, engine.Drain{}); err != nil {
		return err
	}
	for {
		ch, st, running := n.watch()
		if st.Drained {
			return nil
		}
		if !running && n.started.Load() {
			return ErrNotRunning
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("helix: drain of %s: %w (still owns %d partitions)", n.cfg.NodeID, ctx.Err(), len(st.Owned))
		}
	}
}

// Undrain reverses Drain: the node takes partitions again.
func (n *Node) Undrain(ctx context.Context) error {
	return n.send(ctx, engine.Drain{Undrain: true})
}

func (n *Node) send(ctx context.Context, d engine.Drain) error {
	select {
	case n.drains <- d:
		return nil
	case <-n.loopDone:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
}

// State returns the state machine's beliefs as of its last step.
func (n *Node) State() engine.NodeState {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

// Status is a node's state plus what its driver knows, for status pages and metrics.
type Status struct {
	engine.NodeState
	// Running: Run's loop is running.
	Running bool
	// LastHeartbeat is when the last successful heartbeat was sent (node clock); zero
	// before the first. HeartbeatAge is the time since then, -1 before the first.
	LastHeartbeat time.Time
	HeartbeatAge  time.Duration
	// Handlers is the number of partition handlers running.
	Handlers int
	// Health says whether the node can prove it is alive and whether its loop is
	// progressing (see Health).
	Health Health
}

// Status returns the node's status now.
func (n *Node) Status() Status {
	n.mu.Lock()
	s := Status{NodeState: n.state, Running: n.running, LastHeartbeat: n.lastHB, HeartbeatAge: -1}
	n.mu.Unlock()
	if !s.LastHeartbeat.IsZero() {
		s.HeartbeatAge = n.clk.Since(s.LastHeartbeat)
	}
	n.pmu.Lock()
	s.Handlers = len(n.parts)
	n.pmu.Unlock()
	n.fillHealth(&s)
	return s
}

// idle reports whether the loop has nothing queued: no store call in flight or unstepped
// reply, and no pending wake-up. For tests that drive a mock clock.
func (n *Node) idle() bool { return n.inflight.Load() == 0 && n.wakes.Load() == 0 }

// watch returns a channel closed at the next state change, and the state now.
func (n *Node) watch() (<-chan struct{}, engine.NodeState, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changed, n.state, n.running
}

func (n *Node) bumpLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// step feeds one input to the state machine and carries out its effects in order. A
// StopPartition completes (the handler has returned, or overran its bound) before the
// next effect, hence before the next step.
func (n *Node) step(in engine.Input) {
	now := n.clk.Now()
	effects := n.m.Step(now, in)
	st := n.m.State()
	// The liveness deadline moves before the effects are carried out: a partition this
	// step starts must see the deadline of the state that started it (its ctx.Deadline),
	// and the watchdog must not fire on the previous, possibly past, deadline and cancel
	// a handler that was just started.
	n.armLiveness(st)
	for _, e := range effects {
		n.do(e)
	}
	n.afterStep(st)
	n.health.stepped(n.clk.Now())
}

func (n *Node) do(e engine.Effect) {
	switch e := e.(type) {
	case engine.StoreRequest:
		n.exec(e)
	case engine.StartPartition:
		n.startPartition(Partition{ID: e.Partition, Generation: e.Generation})
	case engine.StopPartition:
		n.stopPartition(e.Partition, e.Generation, e.Reason)
	case engine.WakeAt:
		n.armWake(e.At)
	case engine.Stopped:
		n.stopped = true
		n.stopErr = e.Err
	case engine.Event:
		n.event(e)
	default:
		n.log.Warn("unknown effect from the state machine", "effect", fmt.Sprintf("%T", e))
	}
}

// armLiveness moves the watchdog to the state's liveness deadline. Only a registered
// node's deadline is taken: when the node is not registered it owns nothing, and keeping
// the last deadline armed covers a handler that somehow still runs.
func (n *Node) armLiveness(st engine.NodeState) {
	if st.Registered && !st.LivenessUntil.IsZero() && !st.LivenessUntil.Equal(n.armedAt) {
		d := st.LivenessUntil
		n.liveUntil.Store(&d)
		n.armedAt = d
		n.watchdog.Reset(max(n.clk.Until(d), 0))
	}
}

func (n *Node) afterStep(st engine.NodeState) {
	n.mu.Lock()
	n.state = st
	n.bumpLocked()
	n.mu.Unlock()
	if n.fenced.Swap(false) {
		n.restartFenced(st)
	}
}

// restartFenced handles the watchdog having cancelled handlers while the state machine
// still owns their partitions: its loop was behind (a heartbeat reply was queued), and
// the reply has since proved the node alive, so the liveness deadline moved on. The
// partitions were never given to anyone else (that needs this incarnation declared
// dead, which a successful heartbeat refutes), so they are started again with the same
// generation. Partitions the machine no longer owns were stopped by its own effects.
func (n *Node) restartFenced(st engine.NodeState) {
	now := n.clk.Now()
	if !st.Registered || !now.Before(st.LivenessUntil) {
		n.fenced.Store(true) // not yet proved alive: look again after the next step
		return
	}
	for _, op := range st.Owned {
		n.pmu.Lock()
		rp := n.parts[op.Partition]
		restart := rp != nil && rp.selfFenced
		n.pmu.Unlock()
		if !restart {
			continue
		}
		n.waitStopped(rp)
		n.pmu.Lock()
		delete(n.parts, op.Partition)
		n.pmu.Unlock()
		n.log.Warn("liveness deadline passed while the node loop was behind; restarting partition",
			"partition", op.Partition.String(), "generation", op.Generation)
		n.startPartition(Partition{ID: op.Partition, Generation: op.Generation})
	}
}

// watchdogFired runs on a clock timer, outside the loop, when the liveness deadline
// armed last has passed: it cancels every handler, so that processing stops in time
// even if the loop is stuck (in a handler's overlong stop, or starved).
func (n *Node) watchdogFired() {
	d := n.liveUntil.Load()
	if d == nil || n.clk.Now().Before(*d) {
		return // re-armed since
	}
	var cancelled []string
	n.pmu.Lock()
	for id, rp := range n.parts {
		if !rp.selfFenced {
			rp.selfFenced = true
			rp.cancel(&StopError{Reason: engine.StopSelfFenced})
			cancelled = append(cancelled, id.String())
		}
	}
	n.pmu.Unlock()
	if len(cancelled) > 0 {
		n.fenced.Store(true)
		n.log.Warn("liveness deadline passed: cancelled partition handlers", "partitions", len(cancelled), "deadline", *d)
		n.poke()
	}
}

func (n *Node) poke() {
	n.wakes.Add(1)
	select {
	case n.wake <- struct{}{}:
	default:
		n.wakes.Add(-1) // one is queued already
	}
}

func (n *Node) armWake(at time.Time) {
	d := n.clk.Until(at)
	if d <= 0 {
		if n.wakeTimer != nil {
			n.wakeTimer.Stop()
		}
		n.poke()
		return
	}
	if n.wakeTimer == nil {
		n.wakeTimer = n.clk.AfterFunc(d, n.poke)
		return
	}
	n.wakeTimer.Reset(d)
}

// exec performs a store request in its own goroutine, bounded by its deadline mapped
// onto the clock, and delivers the reply to the loop.
func (n *Node) exec(r engine.StoreRequest) {
	n.storeWG.Add(1)
	n.inflight.Add(1)
	go func() {
		defer n.storeWG.Done()
		name := r.Op.Name()
		ctx, cancel := n.clk.WithDeadline(n.storeCtx, r.Deadline)
		sent := n.clk.Now()
		v, err := r.Op.Do(ctx, n.store)
		cancel()
		took := n.clk.Since(sent)
		class := ErrorClass(err)
		if class == "other" {
			// An unclassified failure (deadline, broken connection) leaves the outcome
			// unknown: the contract calls that unavailable.
			err = fmt.Errorf("%w: %s: %w", engine.ErrUnavailable, name, err)
			class = "unavailable"
		}
		n.o.observer.StoreCall(n.cfg.NodeID, name, took, err)
		if err == nil {
			if _, ok := r.Op.(engine.OpHeartbeat); ok {
				n.mu.Lock()
				if sent.After(n.lastHB) {
					n.lastHB = sent
				}
				n.mu.Unlock()
			}
		}
		n.storeFailed(name, class, took, err)
		select {
		case n.replies <- engine.StoreReply{ID: r.ID, Value: v, Err: err}:
		case <-n.loopDone:
		}
	}()
}

func (n *Node) startPartition(p Partition) {
	n.pmu.Lock()
	old := n.parts[p.ID]
	running := old != nil && old.p.Generation == p.Generation && !old.selfFenced
	n.pmu.Unlock()
	if running {
		return
	}
	if old != nil {
		n.stopPartition(p.ID, old.p.Generation, engine.StopRevoked)
	}
	cctx, cancel := context.WithCancelCause(context.Background())
	ctx := &partitionCtx{Context: cctx, deadline: &n.liveUntil, clk: n.clk}
	rp := &runningPart{p: p, cancel: cancel, done: make(chan struct{})}
	n.pmu.Lock()
	n.parts[p.ID] = rp
	n.pmu.Unlock()
	n.log.Info("partition started", "partition", p.ID.String(), "generation", p.Generation)
	n.o.observer.PartitionStarted(n.cfg.NodeID, p)
	go func() {
		defer close(rp.done)
		n.runHandler(ctx, p)
	}()
}

func (n *Node) stopPartition(id engine.PartitionID, gen uint64, reason engine.StopReason) {
	n.pmu.Lock()
	rp := n.parts[id]
	delete(n.parts, id)
	n.pmu.Unlock()
	if rp == nil {
		n.log.Debug("stop of a partition that is not running", "partition", id.String(), "generation", gen, "reason", reason.String())
		return
	}
	start := n.clk.Now()
	rp.cancel(&StopError{Reason: reason})
	ok := n.waitStopped(rp)
	took := n.clk.Since(start)
	if ok {
		n.log.Info("partition stopped", "partition", id.String(), "generation", rp.p.Generation, "reason", reason.String(), "took", took)
	}
	n.o.observer.PartitionStopped(n.cfg.NodeID, rp.p, reason, took)
}

// waitStopped waits for a cancelled handler to return, bounded by the stop timeout.
func (n *Node) waitStopped(rp *runningPart) bool {
	select {
	case <-rp.done:
		return true
	default:
	}
	expired := make(chan struct{})
	t := n.clk.AfterFunc(n.o.stopTimeout, func() { close(expired) })
	defer t.Stop()
	select {
	case <-rp.done:
		return true
	case <-expired:
		n.log.Error("partition handler did not return within the stop timeout; its context is cancelled, continuing without it",
			"partition", rp.p.ID.String(), "generation", rp.p.Generation, "stop_timeout", n.o.stopTimeout)
		return false
	}
}

func (n *Node) stopAll(reason engine.StopReason) {
	n.pmu.Lock()
	var ids []*runningPart
	for _, rp := range n.parts {
		ids = append(ids, rp)
	}
	n.pmu.Unlock()
	for _, rp := range ids {
		n.stopPartition(rp.p.ID, rp.p.Generation, reason)
	}
}

func (n *Node) event(e engine.Event) {
	attrs := []any{"kind", e.Kind}
	if e.Epoch != 0 {
		attrs = append(attrs, "epoch", e.Epoch)
	}
	if e.Partition != (engine.PartitionID{}) {
		attrs = append(attrs, "partition", e.Partition.String())
	}
	if e.Node != "" && e.Node != n.cfg.NodeID {
		attrs = append(attrs, "subject", e.Node)
	}
	if e.Detail != "" {
		attrs = append(attrs, "detail", e.Detail)
	}
	n.log.Log(context.Background(), eventLevel(e.Kind), "event", attrs...)
	n.o.observer.Event(n.cfg.NodeID, e)
}
