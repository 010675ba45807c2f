//go:build !linux

package main

import (
	"errors"
	"log/slog"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
)

// handler refuses --exec: it needs Linux (see execFlags).
func (f *execFlags) handler(engine.Config, time.Duration, *slog.Logger) (helix.Handler, error) {
	if f.command == "" {
		return nil, nil
	}
	return nil, errors.New("--exec is supported on Linux only")
}
