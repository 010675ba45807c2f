package observe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/helixcoord/helix"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Endpoints are a process's HTTP endpoints.
type Endpoints struct {
	// Gatherer serves /metrics (nil: no /metrics).
	Gatherer prometheus.Gatherer
	// Nodes are the process's nodes (one for helix node, several for helix dev).
	Nodes func() []*helix.Node
	// Cluster, if set, adds the store's view of the whole cluster to /status and to
	// the HTML page at /.
	Cluster func(ctx context.Context) (helix.ClusterStatus, error)
	// Page serves an HTML status page at / (helix dev).
	Page bool
}

// NodeView is a node's status as /status shows it.
type NodeView struct {
	ID            string         `json:"id"`
	Running       bool           `json:"running"`
	Registered    bool           `json:"registered"`
	Incarnation   uint64         `json:"incarnation"`
	Coordinator   bool           `json:"coordinator"`
	Epoch         uint64         `json:"epoch"`
	LeaseUntil    time.Time      `json:"lease_until,omitzero"`
	LivenessUntil time.Time      `json:"liveness_until,omitzero"`
	Draining      bool           `json:"draining"`
	Drained       bool           `json:"drained"`
	Stopped       bool           `json:"stopped"`
	HeartbeatAge  time.Duration  `json:"heartbeat_age_ns"`
	Handlers      int            `json:"handlers"`
	Owned         []OwnedView    `json:"owned"`
	PerTaskList   map[string]int `json:"per_task_list"`
	// NotReady and Unhealthy are /readyz's and /healthz's reasons ("" when fine).
	NotReady       string `json:"not_ready,omitempty"`
	Unhealthy      string `json:"unhealthy,omitempty"`
	SelfFenced     bool   `json:"self_fenced"`
	LastStoreError string `json:"last_store_error,omitempty"`
	// Partitions: every partition of the node with its supervision state (running,
	// restarting with next_attempt, giving_back, given_back); Failing (coordinator):
	// partitions given back by every eligible worker, held until a cool-down ends.
	Partitions []helix.PartitionState `json:"partitions"`
	Failing    []string               `json:"failing"`
	// Status is the full status, for callers in Go.
	Status helix.Status `json:"-"`
}

// OwnedView is one owned partition.
type OwnedView struct {
	Partition  string `json:"partition"`
	Generation uint64 `json:"generation"`
}

// StatusDoc is the /status document.
type StatusDoc struct {
	Time         time.Time            `json:"time"`
	Nodes        []NodeView           `json:"nodes"`
	Cluster      *helix.ClusterStatus `json:"cluster,omitempty"`
	ClusterError string               `json:"cluster_error,omitempty"`
}

// View turns a node's status into its /status form.
func View(n *helix.Node) NodeView {
	s := n.Status()
	v := NodeView{ID: n.ID(), Running: s.Running, Registered: s.Registered, Incarnation: s.Incarnation,
		Coordinator: s.Coordinator, Epoch: s.Epoch, LeaseUntil: s.LeaseUntil, LivenessUntil: s.LivenessUntil,
		Draining: s.Draining, Drained: s.Drained, Stopped: s.Stopped, HeartbeatAge: s.HeartbeatAge,
		Handlers: s.Handlers, Owned: []OwnedView{}, PerTaskList: map[string]int{}, Status: s}
	v.NotReady, v.Unhealthy = s.NotReady(), s.Unhealthy()
	v.SelfFenced, v.LastStoreError = s.Health.SelfFenced, s.Health.LastStoreError
	for _, o := range s.Owned {
		v.Owned = append(v.Owned, OwnedView{Partition: o.Partition.String(), Generation: o.Generation})
		v.PerTaskList[o.Partition.Domain+"/"+o.Partition.TaskList]++
	}
	v.Partitions, v.Failing = partitionViews(s)
	return v
}

// Status builds the /status document.
func (e Endpoints) Status(ctx context.Context) StatusDoc {
	doc := StatusDoc{Time: time.Now().UTC(), Nodes: []NodeView{}}
	for _, n := range e.nodes() {
		doc.Nodes = append(doc.Nodes, View(n))
	}
	if e.Cluster != nil {
		cs, err := e.Cluster(ctx)
		if err != nil {
			doc.ClusterError = err.Error()
		} else {
			doc.Cluster = &cs
		}
	}
	return doc
}

// Handler returns the mux of the endpoints.
func (e Endpoints) Handler() http.Handler {
	mux := http.NewServeMux()
	if e.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(e.Gatherer, promhttp.HandlerOpts{}))
	}
	// healthz: every node's loop is running and progressing (a stopped or stuck loop
	// needs a restart). readyz: every node takes partitions: registered, able to prove
	// it is alive (not self-fenced) and not draining. A 503's body says why, per node.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		e.probe(w, helix.Status.Unhealthy)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		e.probe(w, helix.Status.NotReady)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(e.Status(ctx))
	})
	if e.Page {
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			if err := page.Execute(w, e.Status(ctx)); err != nil {
				slog.Warn("status page", "err", err)
			}
		})
	}
	return mux
}

// probe answers 200 "ok" if why is "" for every node, else 503 with one line per node
// that fails.
func (e Endpoints) probe(w http.ResponseWriter, why func(helix.Status) string) {
	var bad []string
	for _, n := range e.nodes() {
		if reason := why(n.Status()); reason != "" {
			bad = append(bad, "node "+n.ID()+": "+reason)
		}
	}
	if len(bad) > 0 {
		http.Error(w, strings.Join(bad, "\n"), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (e Endpoints) nodes() []*helix.Node {
	if e.Nodes == nil {
		return nil
	}
	return e.Nodes()
}

// Serve listens on addr and serves h until ctx is done; it returns the bound address
// (addr may have port 0) once listening. Errors after that are logged.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	return ln.Addr(), nil
}

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"ms": func(d time.Duration) string {
		if d < 0 {
			return "–"
		}
		return fmt.Sprintf("%d ms", d.Milliseconds())
	},
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="1">
<title>helix status</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-variant-numeric:tabular-nums}
th{background:#f3f3f3}.dead{color:#999}.coord{font-weight:bold}
code{background:#f6f6f6;padding:0 .2em}
</style></head><body>
<h1>helix</h1>
<p>Refreshes every second. JSON: <a href="/status">/status</a> · metrics: <a href="/metrics">/metrics</a></p>
{{with .Cluster}}
<h2>Coordinator</h2>
{{if .Coordinator.Held}}<p><b>{{.Coordinator.Owner}}</b>, epoch {{.Coordinator.Epoch}}, lease expires in {{ms .Coordinator.ExpiresIn}}</p>
{{else}}<p>none (last epoch {{.Coordinator.Epoch}})</p>{{end}}
<h2>Nodes</h2>
<table><tr><th>node</th><th>state</th><th>incarnation</th><th>heartbeat age</th><th>partitions</th><th>per task list</th></tr>
{{range .Nodes}}<tr class="{{.State}}"><td>{{.ID}}</td><td>{{.State}}</td><td>{{.Incarnation}}</td><td>{{ms .HeartbeatAge}}</td><td>{{.Total}}</td>
<td>{{range $k, $v := .Partitions}}<code>{{$k}}</code>: {{$v}} {{end}}</td></tr>{{end}}
</table>
<h2>Task lists</h2>
<table><tr><th>domain</th><th>name</th><th>partitions</th><th>owned</th><th>releasing</th><th>unowned</th></tr>
{{range .TaskLists}}<tr><td>{{.Domain}}</td><td>{{.Name}}</td><td>{{.Partitions}}</td><td>{{.Owned}}</td><td>{{.Releasing}}</td><td>{{.Unowned}}</td></tr>{{end}}
</table>
<h2>Handoffs in flight</h2>
{{if .Handoffs}}<table><tr><th>partition</th><th>from</th><th>to</th><th>generation</th></tr>
{{range .Handoffs}}<tr><td>{{.Partition}}</td><td>{{.From}}</td><td>{{.To}}</td><td>{{.Generation}}</td></tr>{{end}}</table>
{{else}}<p>none</p>{{end}}
{{if .GivenBack}}<h2>Given back (handler failing, last hour)</h2>
<table><tr><th>partition</th><th>given back by</th><th>ago</th><th>owner now</th><th>generation</th></tr>
{{range .GivenBack}}<tr><td>{{.Partition}}</td><td>{{.By}}</td><td>{{ms .Age}}</td><td>{{if .Owner}}{{.Owner}}{{else}}<b>unowned</b>{{end}}</td><td>{{.Generation}}</td></tr>{{end}}</table>{{end}}
{{end}}
{{with .ClusterError}}<p style="color:#b00">store: {{.}}</p>{{end}}
<h2>This process</h2>
<table><tr><th>node</th><th>role</th><th>epoch</th><th>registered</th><th>draining</th><th>handlers</th><th>heartbeat age</th></tr>
{{range .Nodes}}<tr><td>{{.ID}}</td><td>{{if .Coordinator}}<span class="coord">coordinator</span>{{else}}worker{{end}}</td><td>{{.Epoch}}</td>
<td>{{.Registered}}</td><td>{{.Draining}}</td><td>{{.Handlers}}</td><td>{{ms .HeartbeatAge}}</td></tr>{{end}}
</table>
<h2>Supervision</h2>
<table><tr><th>node</th><th>partition</th><th>generation</th><th>state</th><th>failures</th><th>next attempt</th><th>last error</th></tr>
{{range $n := .Nodes}}{{range .Partitions}}{{if or (ne .State "running") .Failures}}<tr><td>{{$n.ID}}</td><td>{{.Partition}}</td><td>{{.Generation}}</td><td>{{.State}}</td><td>{{.Failures}}</td>
<td>{{if not .NextAttempt.IsZero}}{{.NextAttempt.Format "15:04:05.000"}}{{end}}</td><td>{{.LastError}}</td></tr>{{end}}{{end}}{{range .Failing}}<tr><td>{{$n.ID}}</td><td>{{.}}</td><td></td><td>failing everywhere</td><td></td><td></td><td></td></tr>{{end}}{{end}}
</table>
</body></html>
`))
