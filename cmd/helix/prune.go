package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/mysqlstore"
)

// defaultNodeRetention is how long a dead or deregistered node stays listed.
const defaultNodeRetention = time.Hour

// pruneLoop deletes the rows of nodes dead or deregistered for longer than retention
// (mysqlstore.PruneNodes) while this node is the coordinator: one client per cluster is
// enough, and the coordinator is the one that exists exactly once. Pruning is safe from
// any client, so a coordinator that just lost the lease doing one more is harmless.
func pruneLoop(ctx context.Context, node *helix.Node, store *mysqlstore.Store, retention time.Duration, log *slog.Logger) {
	every := min(max(retention/4, time.Second), 5*time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !node.Status().Coordinator {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n, err := store.PruneNodes(pctx, retention)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("pruning dead nodes failed", "err", err.Error())
		case n > 0:
			log.Info("pruned dead nodes", "deleted", n, "retention", retention)
		}
	}
}
