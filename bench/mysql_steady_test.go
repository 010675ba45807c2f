package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/mysqlstore"
)

// steadyState runs nodes helix nodes (the first candidates of them coordinator
// candidates) on a fresh cluster of taskLists × parts partitions and returns the
// statements they sent during a 5 s window of steady state.
func steadyState(b *testing.B, d *benchDB, nodes, candidates, taskLists, parts int) (int64, time.Duration) {
	b.Helper()
	ctx := context.Background()
	cluster := fmt.Sprintf("steady-%d-%d", nodes, time.Now().UnixNano())
	// The observer's own reads go through a separate, uncounted pool.
	admin, err := mysqlstore.Open(ctx, d.dsn, mysqlstore.Options{Cluster: cluster})
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	for i := range taskLists {
		if _, err := admin.PutTaskList(ctx, engine.TaskList{Domain: "bench", Name: fmt.Sprintf("tl-%d", i), Partitions: parts}); err != nil {
			b.Fatal(err)
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	for i := range nodes {
		s := d.store(b, cluster)
		node, err := helix.NewNode(helix.Config{NodeID: fmt.Sprintf("node-%03d", i), NoCandidate: i >= candidates}, s,
			helix.HandlerFunc(func(ctx context.Context, p helix.Partition) error { <-ctx.Done(); return nil }),
			helix.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = node.Run(runCtx)
		}()
	}
	// Warm up: every partition assigned, and no row changed for 2 s.
	deadline := time.Now().Add(60 * time.Second)
	var lastRev uint64
	stableSince := time.Now()
	for {
		if time.Now().After(deadline) {
			b.Fatalf("%d nodes did not reach a steady state within 60 s", nodes)
		}
		time.Sleep(250 * time.Millisecond)
		st, err := admin.ReadAssignments(ctx, 0)
		if err != nil {
			b.Fatal(err)
		}
		all := len(st.Assignments) == taskLists*parts
		for _, r := range st.Assignments {
			all = all && r.State == engine.Assigned
		}
		if !all || st.Revision != lastRev {
			lastRev, stableSince = st.Revision, time.Now()
			continue
		}
		if time.Since(stableSince) >= 2*time.Second {
			break
		}
	}
	const window = 5 * time.Second
	before := d.cnt.n.Load()
	start := time.Now()
	time.Sleep(window)
	el := time.Since(start)
	stmts := d.cnt.n.Load() - before
	st, err := admin.ReadAssignments(ctx, lastRev)
	if err != nil {
		b.Fatal(err)
	}
	if len(st.Assignments) != 0 {
		b.Fatalf("%d rows changed during the measurement window: not a steady state", len(st.Assignments))
	}
	return stmts, el
}
