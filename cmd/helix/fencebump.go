package main

import (
	"context"
	"fmt"
	"time"

	"github.com/helixcoord/helix/mysqlstore"
)

func init() {
	register(&command{
		name:    "fence-bump",
		summary: "after a database failover that may have lost commits: raise every lease epoch and free the leases",
		run:     runFenceBump,
	})
}

const fenceBumpExamples = `  HELIX_DSN='helix:secret@tcp(new-primary:3306)/helix' helix fence-bump
  helix fence-bump --dsn-file /run/secrets/helix-dsn --cluster payments
  helix fence-bump --by 10000000

Run this after promoting a replica that may have lost the last commits of the old
primary (asynchronous replication, a restore from backup). Such a replica may have
forgotten lease grants: without this step it could hand out again an epoch that a
coordinator already holds and fences its writes with, and two coordinators could then
both pass the fence.

fence-bump raises the epoch of every lease of the cluster by N (default 1,000,000, far
more grants than could be lost) and frees the leases (no owner, inactive, expired now),
in one transaction. The running coordinator's next write is refused (fenced) and it
steps down; the next election hands out epochs above any that was ever issued.
Assignment rows keep the epoch that wrote them and refuse any lower one. Running it
twice is harmless (one more re-election). Deletable leases stay deletable.
`

func runFenceBump(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "fence-bump", "helix fence-bump [--dsn-file FILE] [--cluster NAME] [--by N]", fenceBumpExamples)
	dsnFile := dsnFlag(fs)
	dsnArg := dsnArgFlag(fs)
	var tf tlsFlags
	tf.register(fs)
	cluster := fs.String("cluster", mysqlstore.DefaultCluster, "the helix `cluster` whose leases to bump")
	by := fs.Uint64("by", 1_000_000, "raise every epoch by `N` (≥ 1)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	pos, code, ok := parseFlags(e, fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return badUsage(e, fs, "unexpected argument %q", pos[0])
	}
	if *by == 0 {
		return badUsage(e, fs, "invalid --by 0: must be ≥ 1")
	}
	if *timeout <= 0 {
		return badUsage(e, fs, "invalid --timeout %v: must be > 0", *timeout)
	}
	dsn, err := dsnFromFlags(e, *dsnArg, *dsnFile)
	if err == nil {
		dsn, err = tf.apply(dsn)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "helix fence-bump: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	s, err := mysqlstore.Open(ctx, dsn, mysqlstore.Options{Cluster: *cluster})
	if err != nil {
		fmt.Fprintf(e.stderr, "helix fence-bump: %v\n", err)
		return 1
	}
	defer s.Close()
	n, err := s.FenceBump(ctx, *by)
	if err != nil {
		fmt.Fprintf(e.stderr, "helix fence-bump: %v\n", err)
		return 1
	}
	fmt.Fprintf(e.stdout, "cluster %q: raised the epoch of %d lease(s) by %d and freed them\n", *cluster, n, *by)
	return 0
}
