package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/helixcoord/helix"
)

// demoHandler is the handler of `helix node` and `helix dev`: it "processes" a partition
// by counting batches every interval, and logs the start and the stop of each partition
// with its generation (the fencing token). The stop line is written after processing
// has ended, the start line before it begins, so the lines bound the processing: the
// e2e suite checks from them that no partition was ever processed by two nodes at once.
// Before each batch it calls helix.Alive, so a batch never runs past the liveness
// deadline (say after the process was paused: the deadline has passed by the time it
// runs again, and Alive waits for a heartbeat or the stop instead).
func demoHandler(log *slog.Logger, interval time.Duration) helix.Handler {
	return helix.HandlerFunc(func(ctx context.Context, p helix.Partition) error {
		log.Info("demo partition start", "event", "partition_start", "partition", p.ID.String(), "generation", p.Generation)
		t := time.NewTicker(interval)
		defer t.Stop()
		batches := 0
		for helix.Alive(ctx, interval) {
			// One unit of work, right after the check (a real handler's takes at most
			// interval and passes p.Generation along with its writes); then the pace.
			batches++
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
		log.Info("demo partition stop", "event", "partition_stop", "partition", p.ID.String(),
			"generation", p.Generation, "reason", helix.StopReason(ctx).String(), "batches", batches)
		return nil
	})
}
