package bench

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/mysqlstore"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

// MySQL store benchmarks, against a real server (local MariaDB here). They skip unless
// HELIX_BENCH_MYSQL_DSN or HELIX_TEST_MYSQL_DSN names a server, e.g.
//
//	HELIX_TEST_MYSQL_DSN='root@tcp(127.0.0.1:3306)/' go test -run '^$' -bench MySQL ./bench/
//
// Each benchmark creates its own database and drops it after. Statements are counted by
// a driver wrapper (every Exec, Query, Begin, Commit, Rollback, Prepare that reaches the
// server), so "stmts/op" is exact.
//
// Targets (issue 4): heartbeat ≥ 5,000/s on 2 cores; coordinator tick with nothing
// changed ≤ 50 ms at 100k partitions × 1,000 nodes; steady state ≤ 1.5 statements per
// second per node with the default timings.

func mysqlServer(b *testing.B) string {
	b.Helper()
	if d := os.Getenv("HELIX_BENCH_MYSQL_DSN"); d != "" {
		return d
	}
	if d := os.Getenv(mysqltest.EnvDSN); d != "" {
		return d
	}
	b.Skipf("MySQL benchmarks need HELIX_BENCH_MYSQL_DSN or %s, e.g. 'root@tcp(127.0.0.1:3306)/'", mysqltest.EnvDSN)
	return ""
}

// ---- a statement-counting driver wrapper ----

type stmtCounter struct{ n atomic.Int64 }

type countingConnector struct {
	driver.Connector
	c *stmtCounter
}

func (cc countingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := cc.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, c: cc.c}, nil
}

type countingConn struct {
	driver.Conn
	c *stmtCounter
}

func (c *countingConn) Prepare(q string) (driver.Stmt, error) {
	c.c.n.Add(1)
	return c.Conn.Prepare(q)
}

func (c *countingConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	c.c.n.Add(1)
	st, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	return &countingStmt{Stmt: st, c: c.c}, nil
}

func (c *countingConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *countingConn) BeginTx(ctx context.Context, o driver.TxOptions) (driver.Tx, error) {
	c.c.n.Add(1)
	tx, err := c.Conn.(driver.ConnBeginTx).BeginTx(ctx, o)
	if err != nil {
		return nil, err
	}
	return &countingTx{Tx: tx, c: c.c}, nil
}

func (c *countingConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	r, err := c.Conn.(driver.ExecerContext).ExecContext(ctx, q, args)
	if !errors.Is(err, driver.ErrSkip) {
		c.c.n.Add(1)
	}
	return r, err
}

func (c *countingConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	r, err := c.Conn.(driver.QueryerContext).QueryContext(ctx, q, args)
	if !errors.Is(err, driver.ErrSkip) {
		c.c.n.Add(1)
	}
	return r, err
}

func (c *countingConn) Ping(ctx context.Context) error { return c.Conn.(driver.Pinger).Ping(ctx) }

func (c *countingConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *countingConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *countingConn) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := c.Conn.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

type countingTx struct {
	driver.Tx
	c *stmtCounter
}

func (t *countingTx) Commit() error   { t.c.n.Add(1); return t.Tx.Commit() }
func (t *countingTx) Rollback() error { t.c.n.Add(1); return t.Tx.Rollback() }

type countingStmt struct {
	driver.Stmt
	c *stmtCounter
}

func (s *countingStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	s.c.n.Add(1)
	return s.Stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (s *countingStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	s.c.n.Add(1)
	return s.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
}

// benchDB is a fresh migrated database with a counting pool.
type benchDB struct {
	dsn string
	db  *sql.DB
	cnt *stmtCounter
}

func newBenchDB(b *testing.B) *benchDB {
	b.Helper()
	dsn := mysqltest.NewDatabase(b, mysqlServer(b))
	conn, _, err := mysqlstore.Connector(dsn)
	if err != nil {
		b.Fatal(err)
	}
	cnt := &stmtCounter{}
	db := sql.OpenDB(countingConnector{Connector: conn, c: cnt})
	db.SetMaxOpenConns(128)
	db.SetMaxIdleConns(128)
	b.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := mysqlstore.Migrate(ctx, db); err != nil {
		b.Fatal(err)
	}
	return &benchDB{dsn: dsn, db: db, cnt: cnt}
}

func (d *benchDB) store(b *testing.B, cluster string) *mysqlstore.Store {
	s, err := mysqlstore.New(d.db, mysqlstore.Options{Cluster: cluster})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// latencies collects durations and reports percentiles.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) { l.mu.Lock(); l.d = append(l.d, d); l.mu.Unlock() }

func (l *latencies) report(b *testing.B, prefix string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return
	}
	slices.Sort(l.d)
	q := func(p float64) float64 {
		return float64(l.d[min(len(l.d)-1, int(p*float64(len(l.d))))]) / 1e6
	}
	b.ReportMetric(q(0.50), prefix+"p50-ms")
	b.ReportMetric(q(0.99), prefix+"p99-ms")
}

// BenchmarkMySQLHeartbeat: steady-state heartbeats (nothing changed) from many
// goroutines at once, each for its own node. Reports heartbeats per second (target
// ≥ 5,000/s on the 2-core machine) and statements per heartbeat (1 by design).
func BenchmarkMySQLHeartbeat(b *testing.B) {
	d := newBenchDB(b)
	s := d.store(b, "default")
	ctx := context.Background()
	const nodes = 256
	type hb struct {
		id        string
		inc, rev  uint64
		latencies *latencies
	}
	hbs := make([]hb, nodes)
	for i := range hbs {
		id := fmt.Sprintf("node-%04d", i)
		r, err := s.RegisterNode(ctx, engine.NodeSpec{ID: id, Capacity: 1})
		if err != nil {
			b.Fatal(err)
		}
		h, err := s.Heartbeat(ctx, id, r.Incarnation, 0) // learns the assignment revision
		if err != nil {
			b.Fatal(err)
		}
		hbs[i] = hb{id: id, inc: r.Incarnation, rev: h.AssignRevision}
	}
	var next atomic.Int64
	var lat latencies
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	before := d.cnt.n.Load()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		h := hbs[int(next.Add(1)-1)%nodes]
		for pb.Next() {
			t0 := time.Now()
			r, err := s.Heartbeat(ctx, h.id, h.inc, h.rev)
			lat.add(time.Since(t0))
			if err != nil {
				b.Error(err)
				return
			}
			if r.Changed {
				b.Error("heartbeat reported a change in steady state")
				return
			}
		}
	})
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "heartbeats/s")
	b.ReportMetric(float64(d.cnt.n.Load()-before)/float64(b.N), "stmts/op")
	lat.report(b, "")
}

// BenchmarkMySQLLease: latency of taking a free lease (a transaction around a locking
// read), of renewing it (UPDATE + SELECT), and of a standby's refused acquire (one
// SELECT).
func BenchmarkMySQLLease(b *testing.B) {
	d := newBenchDB(b)
	s := d.store(b, "default")
	ctx := context.Background()
	b.Run("acquire", func(b *testing.B) {
		var lat latencies
		before := d.cnt.n.Load()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			r, err := s.AcquireLease(ctx, "acq", "me", time.Minute)
			lat.add(time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.ReleaseLease(ctx, "acq", "me", r.Lease.Epoch); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(d.cnt.n.Load()-before)/float64(b.N), "stmts/acquire+release")
		lat.report(b, "")
	})
	b.Run("renew", func(b *testing.B) {
		r, err := s.AcquireLease(ctx, "renew", "me", time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		var lat latencies
		before := d.cnt.n.Load()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			if _, err := s.RenewLease(ctx, "renew", "me", r.Lease.Epoch, time.Minute); err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(t0))
		}
		b.ReportMetric(float64(d.cnt.n.Load()-before)/float64(b.N), "stmts/op")
		lat.report(b, "")
	})
	b.Run("standby-poll", func(b *testing.B) {
		if _, err := s.AcquireLease(ctx, "held", "leader", time.Hour); err != nil {
			b.Fatal(err)
		}
		var lat latencies
		before := d.cnt.n.Load()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			if _, err := s.AcquireLease(ctx, "held", "standby", time.Minute); !errors.Is(err, engine.ErrLeaseHeld) {
				b.Fatalf("standby acquire: %v, want ErrLeaseHeld", err)
			}
			lat.add(time.Since(t0))
		}
		b.ReportMetric(float64(d.cnt.n.Load()-before)/float64(b.N), "stmts/op")
		lat.report(b, "")
	})
}

// tickFixture is one cluster filled by bulk inserts: parts partitions in task lists of
// 1,000, all assigned round-robin to nodes live nodes, and the coordinator lease held.
type tickFixture struct {
	s     *mysqlstore.Store
	nodes []string
	epoch uint64
	rev   uint64
	rows  map[engine.PartitionID]engine.Assignment
	owned map[string][]engine.PartitionID
	// victims counts the nodes killed so far: each iteration (over every run of the
	// benchmark function) kills a node that has not died before, so it owns its share.
	victims int
}

// bulkInsert runs prefix VALUES row, row, … over rows, in chunks; row is one row's SQL
// tuple, e.g. "(?, ?, UTC_TIMESTAMP(6))".
func bulkInsert(ctx context.Context, db *sql.DB, prefix, row string, rows [][]any) error {
	const per = 2000
	for i := 0; i < len(rows); i += per {
		part := rows[i:min(i+per, len(rows))]
		var args []any
		for _, r := range part {
			args = append(args, r...)
		}
		if _, err := db.ExecContext(ctx, prefix+" VALUES "+strings.TrimSuffix(strings.Repeat(row+", ", len(part)), ", "), args...); err != nil {
			return err
		}
	}
	return nil
}

func newTickFixture(b *testing.B, d *benchDB, parts, nodes int) *tickFixture {
	b.Helper()
	ctx := context.Background()
	cluster := fmt.Sprintf("tick-%d-%d", parts, nodes)
	f := &tickFixture{s: d.store(b, cluster), rows: map[engine.PartitionID]engine.Assignment{}, owned: map[string][]engine.PartitionID{}}
	var nrows [][]any
	for i := range nodes {
		id := fmt.Sprintf("node-%04d", i)
		f.nodes = append(f.nodes, id)
		nrows = append(nrows, []any{cluster, id, 1, 1, []byte{}, 0, 0, 1})
	}
	if err := bulkInsert(ctx, d.db, "INSERT INTO helix_nodes (cluster, id, incarnation, capacity, labels, draining, status, assign_rev, last_heartbeat)",
		"(?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))", nrows); err != nil {
		b.Fatal(err)
	}
	var tls, arows [][]any
	for i := 0; i < parts; i++ {
		tl := fmt.Sprintf("tl-%03d", i/1000)
		if i%1000 == 0 {
			tls = append(tls, []any{cluster, "bench", tl, min(1000, parts-i)})
		}
		arows = append(arows, []any{cluster, "bench", tl, i % 1000, f.nodes[i%nodes], 1, 1, 1, "", 1, i + 1})
	}
	if err := bulkInsert(ctx, d.db, "INSERT INTO helix_tasklists (cluster, domain, name, partitions)", "(?, ?, ?, ?)", tls); err != nil {
		b.Fatal(err)
	}
	if err := bulkInsert(ctx, d.db, "INSERT INTO helix_assignments (cluster, domain, tasklist, part_no, owner_id, incarnation, generation, state, target, epoch, revision)", "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", arows); err != nil {
		b.Fatal(err)
	}
	if _, err := d.db.ExecContext(ctx, "INSERT INTO helix_revision (cluster, revision) VALUES (?, ?)", cluster, parts); err != nil {
		b.Fatal(err)
	}
	l, err := f.s.AcquireLease(ctx, "coordinator", "coord", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	f.epoch = l.Lease.Epoch
	st, err := f.s.ReadState(ctx, 0)
	if err != nil {
		b.Fatal(err)
	}
	if len(st.Assignments) != parts || len(st.Nodes) != nodes {
		b.Fatalf("fixture has %d rows and %d nodes, want %d and %d", len(st.Assignments), len(st.Nodes), parts, nodes)
	}
	f.rev = st.Revision
	f.merge(st.Assignments)
	return f
}

func (f *tickFixture) merge(rows []engine.Assignment) {
	for _, r := range rows {
		if old, ok := f.rows[r.Partition]; ok && old.Owner != r.Owner {
			f.owned[old.Owner] = slices.DeleteFunc(f.owned[old.Owner], func(p engine.PartitionID) bool { return p == r.Partition })
		}
		if old, ok := f.rows[r.Partition]; !ok || old.Owner != r.Owner {
			f.owned[r.Owner] = append(f.owned[r.Owner], r.Partition)
		}
		f.rows[r.Partition] = r
	}
}

var tickSizes = []struct{ parts, nodes int }{{10_000, 100}, {10_000, 1_000}, {100_000, 100}, {100_000, 1_000}}

// BenchmarkMySQLTick: the coordinator's store work per tick, plan-free (no allocator).
//
//   - steady: nothing changed — one incremental ReadState (all nodes, task lists, and
//     the rows changed since the last revision: none). Target ≤ 50 ms at 100k × 1,000.
//   - node-died: one node's heartbeat is older than DeadAfter — the incremental
//     ReadState, then one Apply declaring it dead and reassigning all its partitions
//     (round-robin over the others) in one fenced transaction.
func BenchmarkMySQLTick(b *testing.B) {
	d := newBenchDB(b)
	ctx := context.Background()
	for _, sz := range tickSizes {
		f := newTickFixture(b, d, sz.parts, sz.nodes)
		name := fmt.Sprintf("p=%dk/n=%d", sz.parts/1000, sz.nodes)
		b.Run("steady/"+name, func(b *testing.B) {
			var lat latencies
			before := d.cnt.n.Load()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				st, err := f.s.ReadState(ctx, f.rev)
				lat.add(time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				if len(st.Assignments) != 0 || len(st.Nodes) != sz.nodes || st.Revision != f.rev {
					b.Fatalf("steady tick read %d rows, %d nodes, revision %d", len(st.Assignments), len(st.Nodes), st.Revision)
				}
			}
			b.ReportMetric(float64(d.cnt.n.Load()-before)/float64(b.N), "stmts/op")
			lat.report(b, "")
		})
		b.Run("node-died/"+name, func(b *testing.B) {
			var lat latencies
			moved := 0
			var stmts int64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				victim := f.nodes[f.victims%len(f.nodes)]
				f.victims++
				// Everyone heartbeats (untimed) except the victim, whose last heartbeat is
				// made a minute old.
				if _, err := d.db.ExecContext(ctx, "UPDATE helix_nodes SET last_heartbeat = UTC_TIMESTAMP(6) WHERE cluster = ?", f.s.Cluster()); err != nil {
					b.Fatal(err)
				}
				if _, err := d.db.ExecContext(ctx, "UPDATE helix_nodes SET status = 0, last_heartbeat = UTC_TIMESTAMP(6) - INTERVAL 1 MINUTE WHERE cluster = ? AND id = ?", f.s.Cluster(), victim); err != nil {
					b.Fatal(err)
				}
				before := d.cnt.n.Load()
				b.StartTimer()
				t0 := time.Now()
				st, err := f.s.ReadState(ctx, f.rev)
				if err != nil {
					b.Fatal(err)
				}
				var dead []engine.DeadNode
				var alive []string
				for _, n := range st.Nodes {
					if n.Status == engine.NodeAlive && n.HeartbeatAge > 5*time.Second {
						dead = append(dead, engine.DeadNode{ID: n.ID, Incarnation: n.Incarnation})
					} else if n.Status == engine.NodeAlive {
						alive = append(alive, n.ID)
					}
				}
				if len(dead) != 1 || dead[0].ID != victim {
					b.Fatalf("tick saw dead nodes %v, want only %s", dead, victim)
				}
				batch := engine.Batch{Fence: engine.Fence{Key: "coordinator", Epoch: f.epoch}, Dead: dead, DeadAfter: 5 * time.Second}
				for j, p := range f.owned[victim] {
					batch.Changes = append(batch.Changes, engine.Change{Kind: engine.ChangeAssign, Partition: p, Revision: f.rows[p].Revision, Owner: alive[j%len(alive)], Incarnation: 1})
				}
				if _, err := f.s.Apply(ctx, batch); err != nil {
					b.Fatal(err)
				}
				lat.add(time.Since(t0))
				b.StopTimer()
				stmts += d.cnt.n.Load() - before
				moved += len(batch.Changes)
				// Bring the model up to date (untimed).
				ch, err := f.s.ReadAssignments(ctx, f.rev)
				if err != nil {
					b.Fatal(err)
				}
				f.merge(ch.Assignments)
				f.rev = ch.Revision
				b.StartTimer()
			}
			b.ReportMetric(float64(moved)/float64(b.N), "moved/op")
			b.ReportMetric(float64(stmts)/float64(b.N), "stmts/op")
			lat.report(b, "")
		})
	}
}

// BenchmarkMySQLSteadyState: statements per second per node in steady state with the
// default timings (heartbeat 1 s, tick 1 s, lease 6 s renewed every 2 s, standbys
// polling every 1 s), measured on real helix nodes (package helix, the production
// driver) running in this process, each with its own Store on one counting pool. The
// cluster is warmed up until every partition is assigned and nothing has changed for
// 2 s; then statements are counted over a 5 s window. Target ≤ 1.5. One measurement per
// run, whatever b.N (the window is wall-clock time).
//
// With every node a coordinator candidate (the default), each standby polls the lease
// every RetryPeriod (1 s): one SELECT, on top of its heartbeat, so the floor is about 2
// statements/s/node. With a few candidates (the rest NoCandidate) it is about 1.
func BenchmarkMySQLSteadyState(b *testing.B) {
	d := newBenchDB(b)
	for _, c := range []struct{ nodes, candidates int }{{10, 10}, {50, 50}, {50, 3}} {
		b.Run(fmt.Sprintf("nodes=%d/candidates=%d", c.nodes, c.candidates), func(b *testing.B) {
			n := c.nodes
			stmts, window := steadyState(b, d, n, c.candidates, 4, 64)
			b.ReportMetric(float64(stmts)/window.Seconds()/float64(n), "stmts/s/node")
			b.ReportMetric(float64(stmts)/window.Seconds(), "stmts/s")
		})
	}
}
