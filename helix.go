// Package helix is the SDK an application imports to run a helix node: a coordinator
// candidate and a worker that processes the partitions the coordinator gives it.
//
//	store, err := mysqlstore.Open(ctx, dsn, mysqlstore.Options{})
//	node, err := helix.NewNode(helix.Config{NodeID: "worker-1"}, store,
//		helix.HandlerFunc(func(ctx context.Context, p helix.Partition) error {
//			// one unit of work at a time, each only if it ends before the liveness
//			// deadline; pass p.Generation with every write
//			for helix.Alive(ctx, time.Second) {
//				processBatch(ctx, p)
//			}
//			return nil // returning before ctx is done is a failure: restarted with backoff
//		}))
//	err = node.Run(ctx) // returns after a graceful shutdown once ctx is cancelled
//
// The protocol itself is the pure state machine engine.Node; this package is its driver:
// it performs the store calls the machine asks for (each in its own goroutine, bounded
// by the call's deadline), wakes the machine when it asked to be woken, and starts and
// stops the application's Handler per partition. Every timer comes from a
// github.com/benbjohnson/clock Clock, so tests can drive a node with clock.NewMock().
//
// Safety does not depend on the node's loop being healthy: each partition's context
// carries the node's conservative liveness deadline and is cancelled by a clock timer of
// its own when that deadline passes, even if the loop is stuck.
package helix

import (
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/helixcoord/helix/engine"
)

// Config is a node's protocol configuration: identity, capacity, timings. Zero fields
// take engine.DefaultConfig's values.
type Config = engine.Config

// Option sets a driver option of NewNode.
type Option func(*options)

type options struct {
	clock           clock.Clock
	logger          *slog.Logger
	observer        Observer
	seed            uint64
	seedSet         bool
	stopTimeout     time.Duration
	shutdownTimeout time.Duration
	replace         bool // WithReplace

	storeErrorLogInterval time.Duration
}

// WithClock sets the clock every timer and deadline is taken from (default clock.New()).
func WithClock(c clock.Clock) Option { return func(o *options) { o.clock = c } }

// WithLogger sets the structured logger (default slog.Default()). Every line carries the
// node id; lines about leadership carry the epoch, lines about partitions the generation.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithObserver sets where metrics go (default: nowhere). See package observe for the
// Prometheus implementation.
func WithObserver(obs Observer) Option { return func(o *options) { o.observer = obs } }

// WithSeed sets the seed of the state machine's randomness (retry jitter). The default
// mixes the node id with the start time, so that nodes started together do not poll
// in lockstep.
func WithSeed(seed uint64) Option { return func(o *options) { o.seed, o.seedSet = seed, true } }

// WithStopTimeout bounds how long the node waits for a handler to return after its
// partition's context is cancelled (default 5s). A handler that overruns it is logged as
// an error and left behind: the node must keep heartbeating, and the partition's
// context is already cancelled.
func WithStopTimeout(d time.Duration) Option { return func(o *options) { o.stopTimeout = d } }

// WithShutdownTimeout bounds a graceful shutdown: from the Shutdown input to the state
// machine's Stopped (default 2 × DeadAfter + LeaseTTL: the state machine gives a drain
// 2 × DeadAfter, then releases the lease and deregisters). Past it, Run stops every
// handler itself and returns an error.
func WithShutdownTimeout(d time.Duration) Option {
	return func(o *options) { o.shutdownTimeout = d }
}

func (o *options) fill(cfg engine.Config, now time.Time) {
	if o.clock == nil {
		o.clock = clock.New()
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.observer == nil {
		o.observer = NopObserver{}
	}
	if !o.seedSet {
		h := fnv.New64a()
		h.Write([]byte(cfg.NodeID))
		o.seed = h.Sum64() ^ uint64(now.UnixNano())
	}
	if o.stopTimeout <= 0 {
		o.stopTimeout = 5 * time.Second
	}
	if o.shutdownTimeout <= 0 {
		o.shutdownTimeout = 2*cfg.DeadAfter + cfg.LeaseTTL
	}
}
