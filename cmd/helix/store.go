package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/mysqlstore"
)

// storeFlags are the flags of every command that opens the MySQL store.
type storeFlags struct {
	dsnFile *string
	cluster string
	tls     tlsFlags
}

func (s *storeFlags) register(fs *flag.FlagSet) {
	s.dsnFile = dsnFlag(fs)
	fs.StringVar(&s.cluster, "cluster", mysqlstore.DefaultCluster, "helix `cluster` inside the database (several may share one)")
	s.tls.register(fs)
}

// open connects to the store named by the DSN (see dsn.go), checking its schema.
func (s *storeFlags) open(ctx context.Context, e *env) (*mysqlstore.Store, error) {
	dsn, err := loadDSN(e, *s.dsnFile)
	if err != nil {
		return nil, err
	}
	if dsn, err = s.tls.apply(dsn); err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// A missing or outdated schema's error says to run helix migrate; no other does
	// (access denied, connection refused and a newer schema have other remedies).
	return mysqlstore.Open(octx, dsn, mysqlstore.Options{Cluster: s.cluster})
}

// openRetrying opens the store like open, retrying with jittered exponential backoff
// (each attempt logged) while the failure may pass — the database unreachable or
// refusing the node's credentials, the schema not migrated yet — until timeout: a node
// started with its database, or under a supervisor, should wait for it rather than
// exit. Errors no retry can fix (no or bad DSN, bad TLS files, a schema newer than the
// binary) are returned at once, as is every error when timeout is 0.
func (s *storeFlags) openRetrying(ctx context.Context, e *env, log *slog.Logger, timeout time.Duration) (*mysqlstore.Store, error) {
	start := time.Now()
	delay := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		st, err := s.open(ctx, e)
		if err == nil {
			if attempt > 1 {
				log.Info("store open", "attempt", attempt, "waited", time.Since(start))
			}
			return st, nil
		}
		left := timeout - time.Since(start)
		if !mayPass(err) || left <= 0 {
			if attempt > 1 {
				return nil, fmt.Errorf("gave up after %d attempts in %v (--start-timeout %v): %w",
					attempt, time.Since(start).Round(time.Millisecond), timeout, err)
			}
			return nil, err
		}
		wait := min(delay/2+rand.N(delay/2+1), left)
		log.Warn("store not available; retrying", "attempt", attempt, "err", err.Error(), "retry_in", wait, "gives_up_in", left)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("interrupted while waiting for the store: %w", err)
		case <-time.After(wait):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// mayPass: the store-open error can go away without a change to this process.
func mayPass(err error) bool {
	return errors.Is(err, engine.ErrUnavailable) || errors.Is(err, mysqlstore.ErrSchemaOutdated) || errors.Is(err, mysqlstore.ErrSchema)
}

var _ engine.Store = (*mysqlstore.Store)(nil)
