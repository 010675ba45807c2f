package observe

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/engine/memstore"
	"github.com/prometheus/client_golang/prometheus"
)

// revocable fails every call once revoked, as MySQL does after the node's password
// was changed.
type revocable struct {
	engine.Store
	revoked atomic.Bool
}

var errAccessDenied = errors.New("Error 1045 (28000): Access denied for user 'helix'@'localhost'")

func (r *revocable) Heartbeat(ctx context.Context, id string, inc, known uint64) (engine.HeartbeatReply, error) {
	if r.revoked.Load() {
		return engine.HeartbeatReply{}, errors.Join(engine.ErrUnavailable, errAccessDenied)
	}
	return r.Store.Heartbeat(ctx, id, inc, known)
}

// TestReadyzFailsWhileSelfFenced: a node that cannot heartbeat turns /readyz 503 once
// its liveness deadline passes — saying self-fenced and the store's error — while
// /healthz stays 200 (the process is fine; a restart would not help), and turns ready
// again when the store is back.
func TestReadyzFailsWhileSelfFenced(t *testing.T) {
	store := &revocable{Store: memstore.New(time.Now)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := store.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	cfg := engine.FastConfig()
	cfg.NodeID = "n1"
	cfg.NoCandidate = true // the coordinator's own writes are not what is tested
	node, err := helix.NewNode(cfg, store, helix.HandlerFunc(func(ctx context.Context, p helix.Partition) error {
		<-ctx.Done()
		return nil
	}), helix.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	ep := Endpoints{Nodes: func() []*helix.Node { return []*helix.Node{node} }}
	srv := httptest.NewServer(ep.Handler())
	defer srv.Close()
	done := make(chan error, 1)
	go func() { done <- node.Run(ctx) }()
	waitFor(t, "registered and ready", func() bool { code, _ := get(t, srv, "/readyz"); return code == 200 })

	store.revoked.Store(true)
	var body string
	waitFor(t, "/readyz 503", func() bool {
		var code int
		code, body = get(t, srv, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	for _, want := range []string{"node n1: self-fenced", "Error 1045"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz body %q lacks %q", body, want)
		}
	}
	if code, b := get(t, srv, "/healthz"); code != 200 {
		t.Errorf("/healthz while self-fenced: %d %s, want 200", code, b)
	}
	if code, b := get(t, srv, "/status"); code != 200 || !strings.Contains(b, `"self_fenced": true`) || !strings.Contains(b, "Access denied") {
		t.Errorf("/status while self-fenced lacks self_fenced and the cause: %s", b)
	}
	store.revoked.Store(false)
	waitFor(t, "ready again", func() bool { code, _ := get(t, srv, "/readyz"); return code == 200 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestHeldLeaseIsNotAStoreError: a standby's poll answered "held" is not counted in
// helix_store_errors_total; real failures are.
func TestHeldLeaseIsNotAStoreError(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.StoreCall("n1", "acquire", time.Millisecond, errors.Join(errors.New("held by n2"), engine.ErrLeaseHeld))
	m.StoreCall("n1", "heartbeat", time.Millisecond, errors.Join(errAccessDenied, engine.ErrUnavailable))
	srv := httptest.NewServer(Endpoints{Gatherer: reg}.Handler())
	defer srv.Close()
	_, metrics := get(t, srv, "/metrics")
	if strings.Contains(metrics, `class="lease_held"`) {
		t.Errorf("a held lease was counted as a store error:\n%s", grep(metrics, "helix_store_errors_total"))
	}
	if !strings.Contains(metrics, `helix_store_errors_total{class="unavailable",node="n1",op="heartbeat"} 1`) {
		t.Errorf("the unavailable heartbeat was not counted:\n%s", grep(metrics, "helix_store_errors_total"))
	}
	if !strings.Contains(metrics, `helix_store_request_duration_seconds_count{node="n1",op="acquire"} 1`) {
		t.Errorf("the poll's latency was not recorded:\n%s", grep(metrics, "helix_store_request"))
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
