package observe

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/engine/memstore"
	"github.com/prometheus/client_golang/prometheus"
)

// A node whose handler always fails: /metrics counts failures and restarts and shows
// the partition failing; /status shows it restarting, then given back; the cluster
// status lists the give-back; the page renders.
func TestSupervisionIsVisible(t *testing.T) {
	store := memstore.New(time.Now)
	ctx := context.Background()
	if _, err := store.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := New(reg)
	cfg := engine.FastConfig()
	cfg.NodeID = "n1"
	cfg.RestartBase, cfg.RestartMax, cfg.GiveBackAfter = 300*time.Millisecond, 300*time.Millisecond, 3
	node, err := helix.NewNode(cfg, store, helix.HandlerFunc(func(ctx context.Context, p helix.Partition) error {
		return errors.New("no such table")
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
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- node.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "a restarting partition in /status", func() bool {
		_, body := get(t, srv, "/status")
		var doc StatusDoc
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatal(err)
		}
		for _, p := range doc.Nodes[0].Partitions {
			if p.State == "restarting" && !p.NextAttempt.IsZero() && p.LastError == "error: no such table" {
				return true
			}
		}
		return false
	})
	_, metrics := get(t, srv, "/metrics")
	if !strings.Contains(metrics, `helix_partitions_failing{node="n1",scope="node"} 1`) {
		t.Errorf("/metrics while restarting lacks the failing gauge:\n%s", grep(metrics, "helix_partitions_failing"))
	}
	waitFor(t, "the partition given back", func() bool {
		for _, p := range helix.PartitionStates(node.Status().NodeState) {
			if p.State == "given_back" {
				return true
			}
		}
		return false
	})
	_, metrics = get(t, srv, "/metrics")
	for _, want := range []string{`helix_handler_failures_total{node="n1",reason="error"} 3`, `helix_handler_restarts_total{node="n1"} 2`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, grep(metrics, "helix_handler"))
		}
	}
	cs, err := helix.ReadClusterStatus(ctx, store, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.GivenBack) != 1 || cs.GivenBack[0].By != "n1" || cs.GivenBack[0].Partition != "d/t/0" {
		t.Errorf("cluster status given back: %+v", cs.GivenBack)
	}
	if _, page := get(t, srv, "/"); !strings.Contains(page, "Supervision") || !strings.Contains(page, "given_back") {
		t.Errorf("status page lacks the supervision table")
	}
}
