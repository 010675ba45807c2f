package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/engine/memstore"
	"github.com/helixcoord/helix/observe"
	"github.com/prometheus/client_golang/prometheus"
)

func init() {
	register(&command{name: "dev", summary: "all in one process: in-memory store, 3 nodes, demo task lists, status page", run: runDev})
}

const devExamples = `  # Start it, then open the status page it prints:
  helix dev

  # Five nodes, production timings, a task list of your own:
  helix dev --nodes 5 --profile default --tasklists demo/orders:32

  # While it runs, drain a node and watch its partitions move:
  curl -X POST 'http://127.0.0.1:8420/dev/drain?node=dev-2'
  curl -X POST 'http://127.0.0.1:8420/dev/undrain?node=dev-2'

Nothing is installed and nothing persists: the store lives in memory. Ctrl-C or SIGTERM
stops the nodes gracefully.
`

const devDefaultHTTP = "127.0.0.1:8420"

func runDev(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "dev", "helix dev [flags]", devExamples)
	var nf nodeFlags
	var lf logFlags
	nf.register(fs, false)
	// A demo should show a failover or a handoff in a second or two, and stop at once
	// on Ctrl-C; the in-memory store does not mind the extra load.
	fs.Lookup("profile").DefValue = "fast"
	nf.profile = "fast"
	lf.register(fs, "text")
	nodes := fs.Int("nodes", 3, "how many nodes to run (1–64)")
	httpAddr := fs.String("http", devDefaultHTTP, "`address` of the status page, /status, /metrics, /healthz, /readyz")
	tasklists := fs.String("tasklists", "demo/orders:12,demo/emails:6", "task lists to create: `domain/name:partitions`,...")
	work := fs.Duration("work-interval", 100*time.Millisecond, "the demo handler's batch interval")
	pos, code, ok := parseFlags(e, fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return badUsage(e, fs, "unexpected arguments %q", pos)
	}
	if *nodes < 1 || *nodes > 64 {
		return badUsage(e, fs, "invalid --nodes %d: must be 1–64", *nodes)
	}
	tls, err := parseTaskLists(*tasklists)
	if err != nil {
		return badUsage(e, fs, "%v", err)
	}
	log, err := lf.logger(e.stderr)
	if err != nil {
		return badUsage(e, fs, "%v", err)
	}
	nf.capacity = 1
	cfgs := make([]engine.Config, *nodes)
	for i := range cfgs {
		nf.id = fmt.Sprintf("dev-%d", i+1)
		if cfgs[i], err = nf.config(); err != nil {
			return badUsage(e, fs, "%v", err)
		}
	}

	store := memstore.New(time.Now)
	for _, tl := range tls {
		if _, err := store.PutTaskList(ctx, tl); err != nil {
			return fail(e, "dev", err)
		}
	}
	reg := prometheus.NewRegistry()
	metrics := observe.New(reg)
	var all []*helix.Node
	for _, cfg := range cfgs {
		n, err := helix.NewNode(cfg, store, demoHandler(log.With("node", cfg.NodeID), *work),
			helix.WithLogger(log), helix.WithObserver(metrics), helix.WithStopTimeout(nf.stopTimeout))
		if err != nil {
			return fail(e, "dev", err)
		}
		metrics.Watch(n)
		all = append(all, n)
	}

	ep := observe.Endpoints{
		Gatherer: reg,
		Nodes:    func() []*helix.Node { return all },
		Cluster: func(ctx context.Context) (helix.ClusterStatus, error) {
			return helix.ReadClusterStatus(ctx, store, cfgs[0].LeaseKey)
		},
		Page: true,
	}
	mux := http.NewServeMux()
	mux.Handle("/", ep.Handler())
	for _, action := range []string{"drain", "undrain"} {
		draining := action == "drain"
		mux.HandleFunc("POST /dev/"+action, func(w http.ResponseWriter, r *http.Request) {
			id := r.URL.Query().Get("node")
			if _, err := store.UpdateNode(r.Context(), id, engine.NodeUpdate{Draining: &draining}); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "node %s: %sed\n", id, action)
		})
	}
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	defer stopHTTP()
	addr, err := observe.Serve(httpCtx, *httpAddr, mux, log)
	if err != nil && *httpAddr == devDefaultHTTP && errors.Is(err, syscall.EADDRINUSE) {
		// The default port is taken (another helix dev?): any free port will do, since
		// the address is printed below.
		addr, err = observe.Serve(httpCtx, "127.0.0.1:0", mux, log)
	}
	if err != nil {
		return fail(e, "dev", err)
	}

	var names []string
	for _, tl := range tls {
		names = append(names, fmt.Sprintf("%s/%s (%d partitions)", tl.Domain, tl.Name, tl.Partitions))
	}
	fmt.Fprintf(e.stdout, `helix dev: %d nodes on an in-memory store; task lists %s
  status page: http://%s/
  JSON:        http://%s/status
  metrics:     http://%s/metrics
  drain:       curl -X POST 'http://%s/dev/drain?node=dev-2'
Logs go to stderr. Ctrl-C stops the nodes gracefully.
`, len(all), strings.Join(names, ", "), addr, addr, addr, addr)

	var wg sync.WaitGroup
	errs := make([]error, len(all))
	for i, n := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.Run(ctx)
		}()
	}
	<-ctx.Done()
	fmt.Fprintf(e.stdout, "helix dev: stopping the nodes gracefully (a few seconds: with every node leaving, each waits 2 × dead-after = %v for a taker)...\n", 2*cfgs[0].DeadAfter)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fail(e, "dev", err)
	}
	fmt.Fprintln(e.stdout, "helix dev: stopped")
	return 0
}

// parseTaskLists parses domain/name:partitions,...
func parseTaskLists(s string) ([]engine.TaskList, error) {
	var out []engine.TaskList
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, count, ok1 := strings.Cut(item, ":")
		domain, tl, ok2 := strings.Cut(name, "/")
		n, err := strconv.Atoi(count)
		if !ok1 || !ok2 || err != nil {
			return nil, fmt.Errorf("invalid --tasklists item %q: must be domain/name:partitions", item)
		}
		t := engine.TaskList{Domain: domain, Name: tl, Partitions: n}
		if err := engine.ValidateTaskList(t); err != nil {
			return nil, fmt.Errorf("--tasklists: %w", err)
		}
		out = append(out, t)
	}
	return out, nil
}
