package engine

import (
	"fmt"
	"time"
)

// Config is one node's configuration. Zero fields take the defaults of DefaultConfig
// (see WithDefaults); Validate names the field and rule of any bad value.
type Config struct {
	// NodeID identifies the node across restarts (1–128 bytes). Required.
	NodeID string
	// Capacity is the node's weight in allocation, ≥ 1. Default 1.
	Capacity int
	// Labels are free-form key=value pairs, sorted by key.
	Labels []Label
	// Worker: whether the node takes partitions. Default true; a coordinator-only node
	// sets NoWork.
	NoWork bool
	// Candidate: whether the node competes for the coordinator lease. Default true; a
	// worker-only node sets NoCandidate.
	NoCandidate bool

	// LeaseKey is the coordinator lease's key. Default "coordinator".
	LeaseKey string
	// LeaseTTL is how long a coordinator lease lasts without renewal (store time).
	// Default 6s. Must be at least 3 × RenewInterval.
	LeaseTTL time.Duration
	// RenewInterval is how often the coordinator renews. Default LeaseTTL/3.
	RenewInterval time.Duration
	// RetryPeriod is how often a standby polls the lease, ±RetryJitter. Default 1s.
	RetryPeriod time.Duration
	// RetryJitter is the fraction of RetryPeriod drawn at random (from the node's seed)
	// each time, in [0, 1). Default 0.2.
	RetryJitter float64

	// Heartbeat is how often a worker heartbeats. Default 1s.
	Heartbeat time.Duration
	// DeadAfter is the store-time heartbeat age after which the coordinator declares a
	// node dead. Default 5s. Must be ≥ 3 × Heartbeat.
	DeadAfter time.Duration
	// Tick is how often the coordinator reads state and plans. Default 1s.
	Tick time.Duration

	// DriftRate (ρ) bounds how fast this node's clock may run relative to the store's:
	// a holder treats a lease (and a worker its liveness) as lost at
	// sent + ttl·(1−ρ) − SafetyMargin. Default 0.01.
	DriftRate float64
	// SafetyMargin is subtracted from every conservative deadline. Default 100ms.
	SafetyMargin time.Duration
	// RequestTimeout bounds every store call. Default 9/10 of the shorter of
	// RenewInterval and Heartbeat; must be shorter than both.
	RequestTimeout time.Duration

	// MaxInFlight bounds partitions releasing at once, cluster-wide. 0 = unlimited.
	// Default 0.
	MaxInFlight int
	// MaxInFlightPerWorker bounds partitions releasing at once from one worker.
	// 0 = unlimited. Default 0.
	MaxInFlightPerWorker int

	// Nonce tells this process apart from any other started with the same NodeID: the
	// lease owner is LeaseOwner(NodeID, Nonce), so two such processes never share an epoch,
	// and the registration records it, so a second one is refused while the first is
	// alive. Drivers draw it per process (the SDK from crypto/rand, the simulator from its
	// seeded PRNG); empty derives it from the node's seed. 0–32 ASCII letters and digits.
	Nonce string
	// Host and PID describe the process to operators (recorded at registration, shown by
	// a refused duplicate and in status). Optional.
	Host string
	PID  int
	// Replace makes the node's first registration take the id over even while another
	// live process holds it (helix node --replace); that process is told it was replaced
	// and stops. Without it a live holder makes the node stop with ErrNodeInUse. Later
	// re-registrations (after being declared dead) never replace.
	Replace bool
	// Supervision of partition handlers (supervise.go). A handler that fails (returns
	// before its partition is stopped, or panics) is restarted on this node, with the
	// same generation, after a jittered backoff: RestartBase·2^(k−1) for the k-th
	// failure within GiveBackWindow (RestartBase·k if RestartLinear), at most
	// RestartMax, ±RestartJitter. Defaults 1s, 30s, 0.2, exponential.
	RestartBase   time.Duration
	RestartMax    time.Duration
	RestartJitter float64
	RestartLinear bool
	// GiveBackAfter failures within GiveBackWindow make the node give the partition back
	// (Store.GiveBack) instead of restarting it again. Default 5 within 2 min; a negative
	// value (NeverGiveBack) never gives back.
	GiveBackAfter  int
	GiveBackWindow time.Duration
	// GiveBackCoolDown is how long the coordinator keeps a partition off the node that
	// gave it back (best effort: it permutes and redirects the allocator's placements).
	// When every eligible worker is cooling down for it, the partition is reported failing
	// and waits, unassigned, until the first cool-down ends. Default 5 min.
	GiveBackCoolDown time.Duration
}

// DefaultConfig returns the defaults (NodeID is left empty).
func DefaultConfig() Config {
	return Config{
		Capacity:       1,
		LeaseKey:       "coordinator",
		LeaseTTL:       6 * time.Second,
		RenewInterval:  2 * time.Second,
		RetryPeriod:    time.Second,
		RetryJitter:    0.2,
		Heartbeat:      time.Second,
		DeadAfter:      5 * time.Second,
		Tick:           time.Second,
		DriftRate:      0.01,
		SafetyMargin:   100 * time.Millisecond,
		RequestTimeout: 900 * time.Millisecond,

		RestartBase:      time.Second,
		RestartMax:       30 * time.Second,
		RestartJitter:    0.2,
		GiveBackAfter:    5,
		GiveBackWindow:   2 * time.Minute,
		GiveBackCoolDown: 5 * time.Minute,
	}
}

// NeverGiveBack as Config.GiveBackAfter: restart a failing handler forever, never give
// its partition back.
const NeverGiveBack = -1

// FastConfig returns the timings of `--profile fast`, for tests and demos (NodeID is left
// empty): lease 2s, heartbeat 300ms, dead after 1.5s, tick and retry 300ms. Failover takes
// about two seconds, at the price of about three times the store load of the defaults.
func FastConfig() Config {
	return Config{
		LeaseTTL:    2 * time.Second,
		RetryPeriod: 300 * time.Millisecond,
		Heartbeat:   300 * time.Millisecond,
		DeadAfter:   1500 * time.Millisecond,
		Tick:        300 * time.Millisecond,

		RestartBase:      100 * time.Millisecond,
		RestartMax:       2 * time.Second,
		GiveBackWindow:   20 * time.Second,
		GiveBackCoolDown: 30 * time.Second,
	}
}

// WithDefaults fills zero fields. RenewInterval defaults to LeaseTTL/3 when LeaseTTL is
// set, and RequestTimeout to just under the shorter of RenewInterval and Heartbeat.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.Capacity == 0 {
		c.Capacity = d.Capacity
	}
	if c.LeaseKey == "" {
		c.LeaseKey = d.LeaseKey
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = d.LeaseTTL
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = c.LeaseTTL / 3
	}
	if c.RetryPeriod == 0 {
		c.RetryPeriod = d.RetryPeriod
	}
	if c.RetryJitter == 0 {
		c.RetryJitter = d.RetryJitter
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = d.Heartbeat
	}
	if c.DeadAfter == 0 {
		c.DeadAfter = d.DeadAfter
	}
	if c.Tick == 0 {
		c.Tick = d.Tick
	}
	if c.DriftRate == 0 {
		c.DriftRate = d.DriftRate
	}
	if c.SafetyMargin == 0 {
		c.SafetyMargin = d.SafetyMargin
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = min(c.RenewInterval, c.Heartbeat) * 9 / 10
	}
	if c.RestartBase == 0 {
		c.RestartBase = d.RestartBase
	}
	if c.RestartMax == 0 {
		c.RestartMax = max(d.RestartMax, c.RestartBase)
	}
	if c.RestartJitter == 0 {
		c.RestartJitter = d.RestartJitter
	}
	if c.GiveBackAfter == 0 {
		c.GiveBackAfter = d.GiveBackAfter
	}
	if c.GiveBackWindow == 0 {
		c.GiveBackWindow = d.GiveBackWindow
	}
	if c.GiveBackCoolDown == 0 {
		c.GiveBackCoolDown = d.GiveBackCoolDown
	}
	return c
}

// Validate checks a config (after WithDefaults) and names the first bad field and rule.
func (c Config) Validate() error {
	if err := ValidateName("config.NodeID", c.NodeID); err != nil {
		return err
	}
	if err := ValidateNodeSpec(NodeSpec{ID: c.NodeID, Capacity: c.Capacity, Labels: c.Labels}); err != nil {
		return err
	}
	if err := ValidateNonce("config.Nonce", c.Nonce); err != nil {
		return err
	}
	if c.Host != "" {
		if err := validateText("config.Host", c.Host, MaxHostBytes); err != nil {
			return err
		}
	}
	if c.PID < 0 {
		return Invalid("config.PID", fmt.Sprint(c.PID), "must be ≥ 0")
	}
	if c.NoWork && c.NoCandidate {
		return Invalid("config.NoWork", "", "a node must be a worker or a coordinator candidate (NoWork and NoCandidate are both set)")
	}
	if err := ValidateName("config.LeaseKey", c.LeaseKey); err != nil {
		return err
	}
	pos := func(field string, d time.Duration) error {
		if d <= 0 {
			return Invalid(field, d.String(), "must be > 0")
		}
		return nil
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"config.LeaseTTL", c.LeaseTTL}, {"config.RenewInterval", c.RenewInterval},
		{"config.RetryPeriod", c.RetryPeriod}, {"config.Heartbeat", c.Heartbeat},
		{"config.DeadAfter", c.DeadAfter}, {"config.Tick", c.Tick},
		{"config.RequestTimeout", c.RequestTimeout},
	} {
		if err := pos(f.name, f.d); err != nil {
			return err
		}
	}
	// The default RenewInterval is exactly LeaseTTL/3, so the rule is "at least": a
	// holder gets three renewal attempts before its lease runs out.
	if c.LeaseTTL < 3*c.RenewInterval {
		return Invalid("config.LeaseTTL", c.LeaseTTL.String(), fmt.Sprintf("must be at least 3 × RenewInterval (%v)", 3*c.RenewInterval))
	}
	if c.DeadAfter < 3*c.Heartbeat {
		return Invalid("config.DeadAfter", c.DeadAfter.String(), fmt.Sprintf("must be at least 3 × Heartbeat (%v)", 3*c.Heartbeat))
	}
	if c.RequestTimeout >= c.RenewInterval {
		return Invalid("config.RequestTimeout", c.RequestTimeout.String(), fmt.Sprintf("must be shorter than RenewInterval (%v)", c.RenewInterval))
	}
	if c.RequestTimeout >= c.Heartbeat {
		return Invalid("config.RequestTimeout", c.RequestTimeout.String(), fmt.Sprintf("must be shorter than Heartbeat (%v)", c.Heartbeat))
	}
	if c.RetryJitter < 0 || c.RetryJitter >= 1 {
		return Invalid("config.RetryJitter", fmt.Sprint(c.RetryJitter), "must be in [0, 1)")
	}
	if c.DriftRate < 0 || c.DriftRate >= 0.5 {
		return Invalid("config.DriftRate", fmt.Sprint(c.DriftRate), "must be in [0, 0.5)")
	}
	if c.SafetyMargin < 0 {
		return Invalid("config.SafetyMargin", c.SafetyMargin.String(), "must be ≥ 0")
	}
	// The conservative windows must leave room to act: a lease whose safe window is
	// shorter than one renewal interval could never be renewed in time.
	if safe := time.Duration(float64(c.LeaseTTL)*(1-c.DriftRate)) - c.SafetyMargin; safe <= c.RenewInterval+c.RequestTimeout {
		return Invalid("config.SafetyMargin", c.SafetyMargin.String(), "leaves the lease no safe window beyond one renewal interval plus the request timeout")
	}
	// Same for a worker's liveness: its safe window must outlast one heartbeat interval
	// plus a timed-out heartbeat, or a single slow call would fence it.
	if safe := time.Duration(float64(c.DeadAfter)*(1-c.DriftRate)) - c.SafetyMargin; safe <= c.Heartbeat+c.RequestTimeout {
		return Invalid("config.SafetyMargin", c.SafetyMargin.String(), "leaves a worker no safe window beyond one heartbeat interval plus the request timeout")
	}
	if c.MaxInFlight < 0 {
		return Invalid("config.MaxInFlight", fmt.Sprint(c.MaxInFlight), "must be ≥ 0 (0 = unlimited)")
	}
	if c.MaxInFlightPerWorker < 0 {
		return Invalid("config.MaxInFlightPerWorker", fmt.Sprint(c.MaxInFlightPerWorker), "must be ≥ 0 (0 = unlimited)")
	}
	return c.validateSupervision()
}
