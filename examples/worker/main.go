// Command worker is an example helix application: workers that process the partitions
// helix gives them, passing each partition's generation as a fencing token to the
// system they write to, so that a worker that lost a partition without noticing yet
// can never overwrite the work of its successor.
//
// With HELIX_DSN set it runs one worker on MySQL (start several processes with
// different -id). Without it, it runs two workers in this process on an in-memory
// store, and after a few seconds drains the first, so you can watch the partitions
// move and their generations grow:
//
//	go run ./examples/worker
//	HELIX_DSN='helix:secret@tcp(127.0.0.1:3306)/helix' go run ./examples/worker -id w1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/engine/memstore"
	"github.com/helixcoord/helix/mysqlstore"
)

// sink stands for the system the workers write to (a database table, a queue, an
// object store). It remembers, per partition, the highest generation that wrote, and
// refuses writes from a lower one. In SQL this is one condition on the write:
//
//	UPDATE offsets SET pos = ?, fence = ? WHERE part = ? AND fence <= ?
//
// and a write that matches no row is a fenced one: stop processing the partition.
type sink struct {
	mu    sync.Mutex
	fence map[engine.PartitionID]uint64
	done  map[engine.PartitionID]int
}

var errFenced = errors.New("fenced: a newer owner has written to this partition")

func (s *sink) write(p helix.Partition) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.Generation < s.fence[p.ID] {
		return 0, fmt.Errorf("%v: %w (generation %d < %d)", p.ID, errFenced, p.Generation, s.fence[p.ID])
	}
	s.fence[p.ID] = p.Generation
	s.done[p.ID]++
	return s.done[p.ID], nil
}

// process is the application's handler: one batch of work every 200ms until the
// partition is taken away.
func process(out *sink, log *slog.Logger) helix.Handler {
	return helix.HandlerFunc(func(ctx context.Context, p helix.Partition) error {
		log.Info("processing", "partition", p.ID.String(), "generation", p.Generation)
		const batch = 200 * time.Millisecond
		tick := time.NewTicker(batch)
		defer tick.Stop()
		// helix.Alive before each batch: the batch must end before the node's liveness
		// deadline (past it, another node may be processing the partition); Alive waits
		// while the deadline is too close and says false once ctx is done: revoked
		// (moved elsewhere), self-fenced or shutting down.
		for helix.Alive(ctx, batch) {
			if _, err := out.write(p); errors.Is(err, errFenced) {
				// Someone newer owns it: this node's assignment is stale and its
				// revocation (or self-fence) is on its way. Returning now would count
				// as a failure and restart the handler; wait for the stop instead.
				log.Warn("fenced", "partition", p.ID.String(), "generation", p.Generation, "err", err)
				<-ctx.Done()
			}
			select { // the pace: one batch per tick
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		// helix waits for this return before telling anyone else they may start.
		log.Info("stopped", "partition", p.ID.String(), "generation", p.Generation, "why", helix.StopReason(ctx).String())
		return nil
	})
}

func main() {
	id := flag.String("id", "worker-1", "node id (with HELIX_DSN)")
	drainAfter := flag.Duration("drain-after", 4*time.Second, "in-memory demo: drain the first worker after this long")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := &sink{fence: map[engine.PartitionID]uint64{}, done: map[engine.PartitionID]int{}}
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	if dsn := os.Getenv("HELIX_DSN"); dsn != "" {
		store, err := mysqlstore.Open(ctx, dsn, mysqlstore.Options{})
		if err != nil {
			log.Error("open store", "err", err)
			os.Exit(1)
		}
		defer store.Close()
		node, err := helix.NewNode(helix.Config{NodeID: *id}, store, process(out, log.With("node", *id)), helix.WithLogger(quiet))
		if err != nil {
			log.Error("new node", "err", err)
			os.Exit(1)
		}
		if err := node.Run(ctx); err != nil {
			log.Error("run", "err", err)
			os.Exit(1)
		}
		return
	}

	// In-memory demo: two workers, one task list of 6 partitions, fast timings.
	store := memstore.New(time.Now)
	if _, err := store.PutTaskList(ctx, engine.TaskList{Domain: "example", Name: "jobs", Partitions: 6}); err != nil {
		log.Error("put task list", "err", err)
		os.Exit(1)
	}
	fast := engine.FastConfig()
	var nodes []*helix.Node
	for _, name := range []string{"worker-1", "worker-2"} {
		cfg := fast
		cfg.NodeID = name
		n, err := helix.NewNode(cfg, store, process(out, log.With("node", name)), helix.WithLogger(quiet))
		if err != nil {
			log.Error("new node", "err", err)
			os.Exit(1)
		}
		nodes = append(nodes, n)
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.Run(ctx); err != nil {
				log.Error("run", "node", n.ID(), "err", err)
			}
		}()
	}
	select {
	case <-time.After(*drainAfter):
		log.Info("draining worker-1: its partitions move to worker-2 with a higher generation")
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := nodes[0].Drain(dctx); err != nil {
			log.Error("drain", "err", err)
		} else {
			log.Info("worker-1 drained; Ctrl-C to stop")
		}
		cancel()
	case <-ctx.Done():
	}
	wg.Wait()
}
