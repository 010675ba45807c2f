package helix

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"

	"github.com/helixcoord/helix/engine"
)

// WithReplace makes the node take its id over from another live process that holds it
// (helix node --replace), instead of stopping with an error wrapping
// engine.ErrNodeInUse. The takeover is safe, not instant: the holder's heartbeats are
// refused from the first attempt, so it stops its partitions by its own liveness timer
// and then exits, and this node registers once the holder's registration has expired
// (at most DeadAfter). Same as setting Config.Replace.
func WithReplace() Option { return func(o *options) { o.replace = true } }

// withProcess fills the process identity of cfg that the caller left empty: a random
// nonce (so that this process's lease owner and registration differ from any other
// process started with the same NodeID), the host name and the pid.
func withProcess(cfg engine.Config) (engine.Config, error) {
	if cfg.Nonce == "" {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return cfg, fmt.Errorf("helix: drawing the process nonce: %w", err)
		}
		cfg.Nonce = hex.EncodeToString(b[:])
	}
	if cfg.Host == "" {
		if h, err := os.Hostname(); err == nil && len(h) <= engine.MaxHostBytes {
			cfg.Host = h
		}
	}
	if cfg.PID == 0 {
		cfg.PID = os.Getpid()
	}
	return cfg, nil
}

// eventLevel is the log level of a state machine event: the identity conflicts an
// operator must act on stand out from the routine events.
func eventLevel(kind string) slog.Level {
	switch kind {
	case "registration_refused", "replaced":
		return slog.LevelError
	case "registration_waiting", "self_fenced", "node_dead", "register_failed":
		// The node stopped (or cannot start) working: an operator must see it.
		return slog.LevelWarn
	}
	return slog.LevelInfo
}
