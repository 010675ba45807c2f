package helix

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/helixcoord/helix/engine"
)

// Health is what a node's driver knows about its own health, for /healthz and /readyz.
type Health struct {
	// SelfFenced: the node is registered but its liveness deadline has passed. It
	// cannot prove the coordinator still counts it alive, so it has stopped its
	// partitions and takes none until a heartbeat succeeds again.
	SelfFenced bool
	// LoopAge is the time since the node's loop last finished a step (-1 before the
	// first). A healthy loop steps at least every heartbeat (a coordinator-only node at
	// least every LeaseTTL/2); Stalled says it has not for longer than StallAfter.
	LoopAge    time.Duration
	Stalled    bool
	StallAfter time.Duration
	// LastStoreError is the last store call that failed for a reason other than a
	// protocol answer (held lease, fenced write, dead incarnation, …), with its time
	// (node clock); empty if none has.
	LastStoreError   string
	LastStoreErrorAt time.Time
	// NoWork: a coordinator-only node (Config.NoWork), which never registers: it is
	// ready while it runs.
	NoWork bool
}

// NotReady returns why the node does not take partitions now, or "" when it is ready:
// it is running, registered, can prove it is alive, and is not draining.
func (s Status) NotReady() string {
	cause := ""
	if s.Health.LastStoreError != "" {
		cause = "; last store error: " + s.Health.LastStoreError
	}
	switch {
	case !s.Running:
		return "not running"
	case s.Health.NoWork:
		return ""
	case !s.Registered:
		return "not registered (no live incarnation)" + cause
	case s.Health.SelfFenced:
		age := "never"
		if s.HeartbeatAge >= 0 {
			age = s.HeartbeatAge.Round(time.Millisecond).String() + " ago"
		}
		return "self-fenced: cannot prove liveness (last successful heartbeat " + age + ")" + cause
	case s.Draining:
		return "draining"
	}
	return ""
}

// Unhealthy returns why the node needs a restart, or "" when it is healthy: its loop
// has returned, or has not finished a step for longer than StallAfter (it is stuck in a
// step, e.g. waiting on a handler, and cannot heartbeat).
func (s Status) Unhealthy() string {
	switch {
	case !s.Running:
		return "not running"
	case s.Health.Stalled:
		return fmt.Sprintf("node loop stuck: no step finished for %v (bound %v)",
			s.Health.LoopAge.Round(time.Millisecond), s.Health.StallAfter)
	}
	return ""
}

// defaultStoreErrorLogInterval: a store error repeated on every heartbeat is logged once
// per interval per distinct error, with the number of occurrences.
const defaultStoreErrorLogInterval = 30 * time.Second

// WithStoreErrorLogInterval sets how often one distinct store error is logged at most
// (default 30s): the first occurrence is logged at once, later ones within the interval
// are counted and reported with the next line about the same error.
func WithStoreErrorLogInterval(d time.Duration) Option {
	return func(o *options) { o.storeErrorLogInterval = d }
}

type nodeHealth struct {
	stallAfter time.Duration
	lastStep   atomic.Pointer[time.Time] // node clock; nil before the first step
	errs       errLimiter

	mu          sync.Mutex
	lastErr     string
	lastErrTime time.Time
}

func (h *nodeHealth) init(cfg engine.Config, o options) {
	// The loop may legitimately wait a lease period between steps (a standby), and a
	// step may wait a stop timeout for a handler; beyond both plus DeadAfter it cannot
	// have heartbeated in time, whatever it is waiting on.
	h.stallAfter = cfg.LeaseTTL + cfg.DeadAfter + o.stopTimeout
	h.errs.every = o.storeErrorLogInterval
	if h.errs.every <= 0 {
		h.errs.every = defaultStoreErrorLogInterval
	}
}

func (h *nodeHealth) stepped(now time.Time) { h.lastStep.Store(&now) }

func (n *Node) fillHealth(s *Status) {
	h := &n.health
	now := n.clk.Now()
	s.Health.StallAfter = h.stallAfter
	s.Health.NoWork = n.cfg.NoWork
	s.Health.LoopAge = -1
	if t := h.lastStep.Load(); t != nil {
		s.Health.LoopAge = now.Sub(*t)
		s.Health.Stalled = s.Running && s.Health.LoopAge > h.stallAfter
	}
	s.Health.SelfFenced = s.Registered && !s.LivenessUntil.IsZero() && !now.Before(s.LivenessUntil)
	h.mu.Lock()
	s.Health.LastStoreError, s.Health.LastStoreErrorAt = h.lastErr, h.lastErrTime
	h.mu.Unlock()
}

// storeFailed records and logs a failed store call. Protocol answers (a held lease, a
// fenced write, a dead incarnation, …) are the state machine's business and show as its
// events; failures to reach or use the store are logged at WARN with their cause, once
// per distinct error per interval.
func (n *Node) storeFailed(op, class string, took time.Duration, err error) {
	if err == nil || (class != "unavailable" && class != "invalid") {
		return
	}
	now := n.clk.Now()
	msg := err.Error()
	n.health.mu.Lock()
	n.health.lastErr, n.health.lastErrTime = msg, now
	n.health.mu.Unlock()
	if count, ok := n.health.errs.note(now, op+"\x00"+msg); ok {
		n.log.Warn("store call failed", "op", op, "class", class, "took", took, "err", msg,
			"count", count, "interval", n.health.errs.every)
	}
}

// errLimiter lets one line per distinct key through per interval and counts the rest.
type errLimiter struct {
	every time.Duration
	mu    sync.Mutex
	seen  map[string]*errSeen
}

type errSeen struct {
	logged time.Time
	count  int // occurrences since the last line, not yet reported
}

// note records one occurrence of key at now. ok says whether to log it; count is the
// number of occurrences the line reports (this one and those suppressed since the last).
func (l *errLimiter) note(now time.Time, key string) (count int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[string]*errSeen{}
	}
	e := l.seen[key]
	if e == nil {
		if len(l.seen) >= 256 {
			l.forgetOld(now)
		}
		e = &errSeen{}
		l.seen[key] = e
	}
	e.count++
	if !e.logged.IsZero() && now.Sub(e.logged) < l.every {
		return e.count, false
	}
	count = e.count
	e.logged, e.count = now, 0
	return count, true
}

// forgetOld drops keys not logged within the interval (bounding the map when errors
// carry ever-changing text); a dropped key's unreported count is lost.
func (l *errLimiter) forgetOld(now time.Time) {
	for k, e := range l.seen {
		if now.Sub(e.logged) >= l.every {
			delete(l.seen, k)
		}
	}
}
