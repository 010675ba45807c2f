package main

import (
	"context"
	"fmt"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/mysqlstore"
	"github.com/helixcoord/helix/observe"
	"github.com/prometheus/client_golang/prometheus"
)

func init() {
	register(&command{name: "node", summary: "run a production node (coordinator candidate and worker) on MySQL", run: runNode})
}

const nodeExamples = `  # A node with the default timings; the DSN from the environment:
  HELIX_DSN='helix:secret@tcp(db:3306)/helix' helix node --id worker-1

  # The DSN from a mounted secret, metrics on all interfaces, fast failover timings:
  helix node --id worker-2 --dsn-file /run/secrets/helix-dsn --http :9464 --profile fast

  # Everything from the environment (HELIX_ + the flag name):
  HELIX_ID=worker-3 HELIX_DSN_FILE=/run/secrets/helix-dsn HELIX_LEASE_TTL=10s helix node

SIGTERM (or Ctrl-C) drains the node: its partitions are handed off, the lease released
if it holds it, and it exits 0.

One process per node id: a node whose id is held by another live process (its heartbeat
younger than --dead-after) waits until that registration would expire; if the holder is
still heartbeating then, it exits 1 naming the id, the holder's host and pid and when the
registration expires. --replace takes the id over instead; the evicted process exits 1.
`

func runNode(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "node", "helix node [flags]", nodeExamples)
	var nf nodeFlags
	var sf storeFlags
	var lf logFlags
	nf.register(fs, true)
	sf.register(fs)
	lf.register(fs, "json")
	httpAddr := fs.String("http", "127.0.0.1:9464", "`address` of the status page (/), /metrics, /healthz, /readyz and /status (empty: off)")
	work := fs.Duration("work-interval", 100*time.Millisecond, "the demo handler's batch interval")
	startTimeout := fs.Duration("start-timeout", time.Minute, "while the database is unreachable, refuses the credentials or is not migrated\nat start, retry (with backoff, each attempt logged) this long before exiting 1; 0: try once")
	retention := fs.Duration("node-retention", defaultNodeRetention, "how long a dead or deregistered node stays in the nodes table and helix status\nbefore the coordinator deletes it (what fencing needs is kept); 0: forever")
	replace := fs.Bool("replace", false, "take the node id over from another live process that holds it (it is evicted and\nexits; this node registers once its registration expires, at most --dead-after);\nwithout it a node whose id is held refuses to start")
	var xf execFlags // exec_linux.go
	var spf supFlags // supervise.go
	xf.register(fs)
	spf.register(fs)
	pos, code, ok := parseFlags(e, fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return badUsage(e, fs, "unexpected arguments %q", pos)
	}
	cfg, err := nf.config()
	if err != nil {
		return badUsage(e, fs, "%v", err)
	}
	if err := spf.apply(&cfg); err != nil {
		return badUsage(e, fs, "%v", err)
	}
	log, err := lf.logger(e.stderr)
	if err != nil {
		return badUsage(e, fs, "%v", err)
	}
	if *retention < 0 {
		return badUsage(e, fs, "invalid --node-retention %v: must be ≥ 0 (0 = keep forever)", *retention)
	}
	if *startTimeout < 0 {
		return badUsage(e, fs, "invalid --start-timeout %v: must be ≥ 0", *startTimeout)
	}
	// The driver's own lines ("closing bad idle connection", …) go through the same
	// structured log as everything else.
	mysqlstore.SetDriverLogger(log)
	handler := demoHandler(log.With("node", cfg.NodeID), *work)
	if h, err := xf.handler(cfg, nf.stopTimeout, log.With("node", cfg.NodeID)); err != nil {
		return badUsage(e, fs, "%v", err)
	} else if h != nil {
		handler = h
	}
	store, err := sf.openRetrying(ctx, e, log.With("node", cfg.NodeID), *startTimeout)
	if err != nil {
		return fail(e, "node", err)
	}
	defer store.Close()

	reg := prometheus.NewRegistry()
	metrics := observe.New(reg)
	cfg.Replace = *replace
	node, err := helix.NewNode(cfg, store, handler,
		helix.WithLogger(log), helix.WithObserver(metrics), helix.WithStopTimeout(nf.stopTimeout))
	if err != nil {
		return fail(e, "node", err)
	}
	metrics.Watch(node)

	httpCtx, stopHTTP := context.WithCancel(context.Background())
	defer stopHTTP()
	if *httpAddr != "" {
		ep := observe.Endpoints{
			Gatherer: reg,
			Nodes:    func() []*helix.Node { return []*helix.Node{node} },
			Cluster: func(ctx context.Context) (helix.ClusterStatus, error) {
				return helix.ReadClusterStatus(ctx, store, cfg.LeaseKey)
			},
			Page: true, // the status page helix dev serves, on a production node too
		}
		addr, err := observe.Serve(httpCtx, *httpAddr, ep.Handler(), log)
		if err != nil {
			return fail(e, "node", err)
		}
		log.Info("http listening", "node", cfg.NodeID, "addr", addr.String(),
			"status", fmt.Sprintf("http://%s/status", addr))
	}
	if *retention > 0 {
		go pruneLoop(httpCtx, node, store, *retention, log.With("node", cfg.NodeID))
	}
	if err := node.Run(ctx); err != nil {
		return fail(e, "node", err)
	}
	return 0
}
