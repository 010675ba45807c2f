//go:build !linux

package main

import (
	"errors"
	"flag"
	"log/slog"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
)

// execFlags: --exec needs Linux (its guard relies on CLOCK_MONOTONIC shared between
// processes, process groups and Pdeathsig).
type execFlags struct {
	command string
	grace   time.Duration
}

func (f *execFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.command, "exec", "", "run `COMMAND` once per owned partition (Linux only)")
	fs.DurationVar(&f.grace, "exec-grace", 3*time.Second, "SIGTERM → SIGKILL grace period of --exec children")
}

func (f *execFlags) handler(engine.Config, time.Duration, *slog.Logger) (helix.Handler, error) {
	if f.command == "" {
		return nil, nil
	}
	return nil, errors.New("--exec is supported on Linux only")
}
