package observe

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/engine/memstore"
	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestEndpointsOfARunningNode runs one node (real clock, fast timings) on memstore and
// checks what /metrics, /healthz, /readyz and /status say through its life.
func TestEndpointsOfARunningNode(t *testing.T) {
	store := memstore.New(time.Now)
	ctx := context.Background()
	if _, err := store.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t", Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := New(reg)
	cfg := engine.FastConfig()
	cfg.NodeID = "n1"
	node, err := helix.NewNode(cfg, store, helix.HandlerFunc(func(ctx context.Context, p helix.Partition) error {
		<-ctx.Done()
		return nil
	}), helix.WithObserver(m), helix.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	m.Watch(node)
	ep := Endpoints{Gatherer: reg, Nodes: func() []*helix.Node { return []*helix.Node{node} },
		Cluster: func(ctx context.Context) (helix.ClusterStatus, error) { return helix.ReadClusterStatus(ctx, store, "") },
		Page:    true}
	srv := httptest.NewServer(ep.Handler())
	defer srv.Close()

	if code, _ := get(t, srv, "/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz before Run: %d, want 503", code)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- node.Run(runCtx) }()
	waitFor(t, "4 partitions running", func() bool { return node.Status().Handlers == 4 })
	waitFor(t, "ready", func() bool { code, _ := get(t, srv, "/readyz"); return code == 200 })
	if code, _ := get(t, srv, "/healthz"); code != 200 {
		t.Fatalf("/healthz while running: %d", code)
	}

	// An error from the store is counted by operation and class.
	m.StoreCall("n1", "apply", time.Millisecond, errors.Join(errors.New("x"), engine.ErrFenced))
	_, metrics := get(t, srv, "/metrics")
	for _, want := range []string{
		`helix_coordinator{node="n1"} 1`,
		`helix_partitions_owned{node="n1"} 4`,
		`helix_partition_handlers{node="n1"} 4`,
		`helix_registered{node="n1"} 1`,
		`helix_epoch{node="n1"} 1`,
		`helix_heartbeat_age_seconds{node="n1"}`,
		`helix_partition_starts_total{node="n1"} 4`,
		`helix_store_request_duration_seconds_count{node="n1",op="heartbeat"}`,
		`helix_store_request_duration_seconds_count{node="n1",op="acquire"}`,
		`helix_store_errors_total{class="fenced",node="n1",op="apply"} 1`,
		`helix_events_total{kind="became_coordinator",node="n1"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	code, body := get(t, srv, "/status")
	var doc StatusDoc
	if err := json.Unmarshal([]byte(body), &doc); code != 200 || err != nil {
		t.Fatalf("/status: %d %v", code, err)
	}
	if len(doc.Nodes) != 1 || len(doc.Nodes[0].Owned) != 4 || !doc.Nodes[0].Coordinator || doc.Cluster == nil || doc.Cluster.Owned != 4 {
		t.Fatalf("/status: %s", body)
	}
	if code, page := get(t, srv, "/"); code != 200 || !strings.Contains(page, "n1") || !strings.Contains(page, "epoch 1") {
		t.Fatalf("status page: %d\n%s", code, page)
	}

	// Draining: not ready any more, still healthy. A lone node keeps its partitions
	// (nobody to move them to), so Drain gives up when its context ends.
	dctx, dcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer dcancel()
	if err := node.Drain(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain of a lone node: %v, want the context's deadline", err)
	}
	if code, _ := get(t, srv, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining: %d, want 503", code)
	}
	if code, _ := get(t, srv, "/healthz"); code != 200 {
		t.Fatalf("/healthz while draining: %d, want 200", code)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if code, _ := get(t, srv, "/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz after Run: %d, want 503", code)
	}
	_, metrics = get(t, srv, "/metrics")
	if !strings.Contains(metrics, `helix_partition_stops_total{node="n1",reason="shutdown"} 4`) {
		t.Errorf("/metrics after shutdown lacks the 4 shutdown stops:\n%s", grep(metrics, "helix_partition_stops"))
	}
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
