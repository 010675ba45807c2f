// Package e2e runs the helix binary as real processes against a real MariaDB / MySQL:
// the end-to-end tests (e2e_test.go) and the failover benchmarks (bench/) share the
// harness here — building the binary, starting and killing `helix node` processes,
// a fault-injecting TCP proxy in front of the database, reading the cluster's state
// from the store, and checking every node's partition start/stop log lines for overlap.
//
// It is a test helper: only tests and benchmarks import it.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/mysqlstore"
)

// Build compiles the helix binary into dir and returns its path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "helix")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/helixcoord/helix/cmd/helix")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// Profile is a set of node timing flags.
type Profile struct {
	Name      string
	Args      []string      // flags for helix node
	LeaseTTL  time.Duration // for the bounds the tests assert
	Retry     time.Duration
	Heartbeat time.Duration
	DeadAfter time.Duration
	Tick      time.Duration
}

// Fast is `--profile fast` (engine.FastConfig): lease 2s, heartbeat 300ms, dead after 1.5s.
var Fast = profileOf("fast", engine.FastConfig())

// Default is the default timings (engine.DefaultConfig): lease 6s, heartbeat 1s, dead after 5s.
var Default = profileOf("default", engine.DefaultConfig())

// profileOf is the Profile of `helix node --profile name`, whose timings are cfg's.
func profileOf(name string, cfg engine.Config) Profile {
	cfg = cfg.WithDefaults()
	return Profile{Name: name, Args: []string{"--profile", name}, LeaseTTL: cfg.LeaseTTL,
		Retry: cfg.RetryPeriod, Heartbeat: cfg.Heartbeat, DeadAfter: cfg.DeadAfter, Tick: cfg.Tick}
}

// Cluster is a set of helix node processes sharing one database.
type Cluster struct {
	Bin     string
	DSN     string // names the database
	Dir     string // logs go here
	Profile Profile

	mu    sync.Mutex
	procs []*Proc
	store *mysqlstore.Store
}

// NewCluster opens the store (the schema must be migrated) for reading status.
func NewCluster(ctx context.Context, bin, dsn, dir string, p Profile) (*Cluster, error) {
	st, err := mysqlstore.Open(ctx, dsn, mysqlstore.Options{})
	if err != nil {
		return nil, err
	}
	return &Cluster{Bin: bin, DSN: dsn, Dir: dir, Profile: p, store: st}, nil
}

// Store is the cluster's store, for reads.
func (c *Cluster) Store() *mysqlstore.Store { return c.store }

// Helix runs a helix admin command (migrate, tasklist, status, …) with the DSN in the
// environment and returns its stdout.
func (c *Cluster) Helix(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.Bin, args...)
	cmd.Env = cleanEnv("HELIX_DSN=" + c.DSN)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("helix %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// cleanEnv is the environment without any HELIX_* variable of the caller's, plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HELIX_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// Proc is one run of `helix node`.
type Proc struct {
	ID      string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	// Killed is when the process was seen dead after SIGKILL (zero otherwise): its open
	// partitions ended no later than that.
	Killed time.Time
	Exited time.Time
}

// Start starts node id; dsn overrides the cluster's DSN (for a node behind a proxy).
func (c *Cluster) Start(id, dsn string, extra ...string) (*Proc, error) {
	if dsn == "" {
		dsn = c.DSN
	}
	c.mu.Lock()
	run := 0
	for _, p := range c.procs {
		if p.ID == id {
			run++
		}
	}
	c.mu.Unlock()
	logPath := filepath.Join(c.Dir, fmt.Sprintf("%s.%d.log", id, run))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args := append([]string{"node", "--id", id, "--http", "127.0.0.1:0", "--log-format", "json"}, c.Profile.Args...)
	args = append(args, extra...)
	cmd := exec.Command(c.Bin, args...)
	cmd.Env = cleanEnv("HELIX_DSN=" + dsn)
	cmd.Stdout = f
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &Proc{ID: id, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		p.Exited = time.Now()
		f.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

// Procs returns every process started, in start order.
func (c *Cluster) Procs() []*Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.procs)
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() error {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	p.Killed = time.Now()
	return nil
}

// Term sends SIGTERM.
func (p *Proc) Term() error { return p.cmd.Process.Signal(syscall.SIGTERM) }

// Stop freezes the process (SIGSTOP): its connections stay open, its kernel still
// acknowledges packets, and it says nothing — as in a long GC or VM pause.
func (p *Proc) Stop() error { return p.cmd.Process.Signal(syscall.SIGSTOP) }

// Cont resumes a stopped process (SIGCONT).
func (p *Proc) Cont() error { return p.cmd.Process.Signal(syscall.SIGCONT) }

// Wait waits up to d for the process to exit and returns its exit error.
func (p *Proc) Wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s did not exit within %v", p.ID, d)
	}
}

// HTTPAddr returns the node's observability address from its log, once logged.
func (p *Proc) HTTPAddr() string {
	lines, _ := readLines(p.LogPath)
	for _, l := range lines {
		if l["msg"] == "http listening" {
			if a, ok := l["addr"].(string); ok {
				return a
			}
		}
	}
	return ""
}

// Shutdown SIGTERMs every running process and waits for all (bounded), returning the
// first error; what does not exit in time is killed.
func (c *Cluster) Shutdown(d time.Duration) error {
	var errs []error
	procs := c.Procs()
	for _, p := range procs {
		if p.Running() {
			_ = p.Cont() // a stopped process would never see the SIGTERM
			_ = p.Term()
		}
	}
	for _, p := range procs {
		if !p.Killed.IsZero() {
			continue
		}
		if err := p.Wait(d); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.ID, err))
			if p.Running() {
				_ = p.Kill()
			}
		}
	}
	if c.store != nil {
		c.store.Close()
	}
	return errors.Join(errs...)
}

// Status reads the cluster status from the store.
func (c *Cluster) Status(ctx context.Context) (helix.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return helix.ReadClusterStatus(ctx, c.store, "")
}

// Poll calls cond every 20ms until it returns true or d passes; it returns the time it
// took, or an error carrying cond's last complaint.
func Poll(ctx context.Context, d time.Duration, cond func(helix.ClusterStatus) (bool, string), read func(context.Context) (helix.ClusterStatus, error)) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(d)
	last := ""
	for {
		cs, err := read(ctx)
		if err == nil {
			ok, why := cond(cs)
			if ok {
				return time.Since(start), nil
			}
			last = why
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return time.Since(start), fmt.Errorf("after %v: %s", d, last)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Balanced checks that every configured partition is owned by one of live (and only
// those), nothing is in flight, and per task list and in total no live node has more
// than one partition above another.
func Balanced(cs helix.ClusterStatus, live []string) (bool, string) {
	if cs.Owned != cs.Partitions {
		return false, fmt.Sprintf("%d of %d partitions owned", cs.Owned, cs.Partitions)
	}
	if len(cs.Handoffs) > 0 {
		return false, fmt.Sprintf("%d handoffs in flight", len(cs.Handoffs))
	}
	isLive := map[string]bool{}
	for _, id := range live {
		isLive[id] = true
	}
	totals := map[string]int{}
	per := map[string]map[string]int{}
	for _, n := range cs.Nodes {
		if n.Total > 0 && !isLive[n.ID] {
			return false, fmt.Sprintf("node %s (%s) owns %d partitions but is not live", n.ID, n.State, n.Total)
		}
		if isLive[n.ID] {
			if n.State != "alive" {
				return false, fmt.Sprintf("node %s is %s", n.ID, n.State)
			}
			totals[n.ID] = n.Total
			for tl, k := range n.Partitions {
				if per[tl] == nil {
					per[tl] = map[string]int{}
				}
				per[tl][n.ID] = k
			}
		}
	}
	if len(totals) != len(live) {
		return false, fmt.Sprintf("%d of %d live nodes registered", len(totals), len(live))
	}
	if spread(totals, live) > 1 {
		return false, fmt.Sprintf("totals not balanced: %v", totals)
	}
	for _, tl := range slices.Sorted(maps.Keys(per)) {
		if spread(per[tl], live) > 1 {
			return false, fmt.Sprintf("task list %s not balanced: %v", tl, per[tl])
		}
	}
	return true, ""
}

func spread(m map[string]int, ids []string) int {
	lo, hi := -1, 0
	for _, id := range ids {
		v := m[id]
		if lo < 0 || v < lo {
			lo = v
		}
		hi = max(hi, v)
	}
	return hi - lo
}

// ---- logs ----

func readLines(path string) ([]map[string]any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out, sc.Err()
}

// Interval is one stretch of processing of a partition by one process, from its
// "partition_start" line to its "partition_stop" line (or the process's death).
type Interval struct {
	Proc       string // id and run, e.g. n3.1
	Partition  string
	Generation uint64
	Start, End time.Time
	Open       bool   // no stop line (and the process was not killed)
	Reason     string // the stop reason logged
}

// Intervals parses every process's log into processing intervals.
func Intervals(procs []*Proc) ([]Interval, error) {
	var all []Interval
	for _, p := range procs {
		lines, err := readLines(p.LogPath)
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(filepath.Base(p.LogPath), ".log")
		open := map[string]*Interval{}
		for _, l := range lines {
			ev, _ := l["event"].(string)
			if ev != "partition_start" && ev != "partition_stop" {
				continue
			}
			ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(l["time"]))
			if err != nil {
				return nil, fmt.Errorf("%s: bad time in %v", p.LogPath, l)
			}
			part := fmt.Sprint(l["partition"])
			gen := uint64(0)
			if g, ok := l["generation"].(float64); ok {
				gen = uint64(g)
			}
			switch ev {
			case "partition_start":
				if prev := open[part]; prev != nil {
					return nil, fmt.Errorf("%s: %s started twice without a stop", name, part)
				}
				open[part] = &Interval{Proc: name, Partition: part, Generation: gen, Start: ts}
			case "partition_stop":
				iv := open[part]
				if iv == nil {
					return nil, fmt.Errorf("%s: %s stopped without a start", name, part)
				}
				iv.End = ts
				iv.Reason, _ = l["reason"].(string)
				all = append(all, *iv)
				delete(open, part)
			}
		}
		for _, iv := range open {
			if !p.Killed.IsZero() {
				iv.End = p.Killed
				iv.Reason = "killed"
			} else if !p.Running() {
				iv.Open = true // exited without logging the stop: a bug
				iv.End = p.Exited
			} else {
				iv.End = time.Now().Add(24 * time.Hour) // still running: open-ended
				iv.Reason = "running"
			}
			all = append(all, *iv)
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Partition != all[j].Partition {
			return all[i].Partition < all[j].Partition
		}
		return all[i].Start.Before(all[j].Start)
	})
	return all, nil
}

// Overlaps returns every interval (of Intervals' sorted output) that starts before an
// earlier interval of its partition has ended — each paired with the earlier one that
// ends last, so that one long interval is flagged against every later one inside it —
// plus intervals that never ended although their process exited, and generations that
// did not grow from one owner to the next.
func Overlaps(ivs []Interval) []string {
	var bad []string
	var reach Interval // of the partition's intervals so far, the one that ends last
	for i, iv := range ivs {
		if iv.Open {
			bad = append(bad, fmt.Sprintf("%s: %s (generation %d) has no stop line although the process exited", iv.Proc, iv.Partition, iv.Generation))
		}
		if i == 0 || ivs[i-1].Partition != iv.Partition {
			reach = iv
			continue
		}
		if iv.Start.Before(reach.End) {
			bad = append(bad, fmt.Sprintf("%s processed by %s [%s, %s] (gen %d) and %s from %s (gen %d): overlap %v",
				iv.Partition, reach.Proc, reach.Start.Format("15:04:05.000000"), reach.End.Format("15:04:05.000000"), reach.Generation,
				iv.Proc, iv.Start.Format("15:04:05.000000"), iv.Generation, reach.End.Sub(iv.Start)))
		}
		if prev := ivs[i-1]; iv.Generation <= prev.Generation && iv.Proc != prev.Proc {
			bad = append(bad, fmt.Sprintf("%s: generation %d on %s after %d on %s", iv.Partition, iv.Generation, iv.Proc, prev.Generation, prev.Proc))
		}
		if iv.End.After(reach.End) {
			reach = iv
		}
	}
	return bad
}

// ---- fault-injecting proxy ----

// Proxy forwards TCP connections to a backend until Cut: then it stops forwarding on
// every connection (a black hole: packets vanish, nothing is refused or reset) and
// holds new connections the same way, until Heal closes the held ones.
//
// It reads the MySQL protocol's command packets on the way to the server, so that a
// fault can be armed on a statement (Arm): a frozen or cut-off client at the worst
// moment, right after the server locked rows for it.
type Proxy struct {
	ln      net.Listener
	backend string
	mu      sync.Mutex
	cut     bool
	// loseFIN: while cut, a connection that one side closes stays open on the other
	// (the FIN is lost in the black hole too), so the server keeps the session.
	loseFIN bool
	conns   map[net.Conn]struct{}
	trigger *trigger
}

// trigger is a one-shot fault: fire runs when the server starts answering the first
// statement that match accepts.
type trigger struct {
	match func(query string) bool
	fire  func()
}

// NewProxy listens on 127.0.0.1:0 and forwards to backend (host:port).
func NewProxy(backend string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, backend: backend, conns: map[net.Conn]struct{}{}}
	go p.accept()
	return p, nil
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

// Cut starts black-holing.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
}

// LoseFIN makes the black hole swallow connection closes too: a client that gives up on
// a connection during the cut leaves the server's side of it open until Heal.
func (p *Proxy) LoseFIN() {
	p.mu.Lock()
	p.loseFIN = true
	p.mu.Unlock()
}

// Arm sets a one-shot fault: fire runs (once, in the proxy) when the server begins to
// answer the first client statement (COM_QUERY; the store interpolates its parameters)
// whose text match accepts — after the server ran it, so its row locks are held, and
// before the client sees the answer.
func (p *Proxy) Arm(match func(query string) bool, fire func()) {
	p.mu.Lock()
	p.trigger = &trigger{match: match, fire: fire}
	p.mu.Unlock()
}

// Heal ends the black hole: connections held during it are closed (their client sees
// them fail and reconnects); new ones are forwarded again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut = false
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

func (p *Proxy) isCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

// takeTrigger disarms and returns the armed trigger if query matches it.
func (p *Proxy) takeTrigger(query string) *trigger {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.trigger == nil || !p.trigger.match(query) {
		return nil
	}
	t := p.trigger
	p.trigger = nil
	return t
}

func (p *Proxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	p.track(client, true)
	if p.isCut() {
		// Hold the connection without a word until Heal closes it.
		_, _ = io.Copy(io.Discard, client)
		p.release(client)
		return
	}
	server, err := net.Dial("tcp", p.backend)
	if err != nil {
		p.release(client)
		return
	}
	p.track(server, true)
	var armed atomic.Pointer[trigger] // matched, waiting for the server's answer
	done := make(chan struct{}, 2)
	go func() { p.pipeQueries(server, client, &armed); done <- struct{}{} }()
	go func() { p.pipeReplies(client, server, &armed); done <- struct{}{} }()
	<-done
	p.mu.Lock()
	hold := p.cut && p.loseFIN
	p.mu.Unlock()
	if hold {
		return // both ends stay open (and tracked) until Heal or Close
	}
	p.release(client)
	p.release(server)
}

func (p *Proxy) release(c net.Conn) {
	c.Close()
	p.track(c, false)
}

// pipeReplies copies the server's bytes to the client, discarding them while cut; an
// armed trigger fires before the first bytes of the answer are passed on.
func (p *Proxy) pipeReplies(dst, src net.Conn, armed *atomic.Pointer[trigger]) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if t := armed.Swap(nil); t != nil {
				t.fire()
			}
			if !p.isCut() {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// pipeQueries copies the client's bytes to the server, discarding them while cut. It
// follows the stream's packets (3-byte length, sequence number, payload) on the side and
// arms the connection when a command packet (sequence 0) is a COM_QUERY whose text
// matches the proxy's trigger; each chunk is examined before it is passed on, so the
// trigger is armed before the server can answer. A stream that is not MySQL (a packet
// longer than maxPacket) is only copied.
func (p *Proxy) pipeQueries(dst, src net.Conn, armed *atomic.Pointer[trigger]) {
	const comQuery, maxPacket = 0x03, 1 << 20
	buf := make([]byte, 32<<10)
	var pending []byte
	parsing := true
	for {
		n, err := src.Read(buf)
		if n > 0 && parsing {
			pending = append(pending, buf[:n]...)
			for len(pending) >= 4 {
				size := int(pending[0]) | int(pending[1])<<8 | int(pending[2])<<16
				if size > maxPacket {
					parsing, pending = false, nil
					break
				}
				if len(pending) < 4+size {
					break
				}
				if pending[3] == 0 && size > 0 && pending[4] == comQuery {
					if t := p.takeTrigger(string(pending[5 : 4+size])); t != nil {
						armed.Store(t)
					}
				}
				pending = pending[4+size:]
			}
		}
		if n > 0 && !p.isCut() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// ProxiedDSN returns dsn with its address replaced by the proxy's.
func ProxiedDSN(dsn, proxyAddr string) (string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", err
	}
	cfg.Net = "tcp"
	cfg.Addr = proxyAddr
	return cfg.FormatDSN(), nil
}

// Backend returns the host:port of dsn.
func Backend(dsn string) (string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", err
	}
	if cfg.Net != "tcp" {
		return "", fmt.Errorf("the test DSN must use tcp, not %q", cfg.Net)
	}
	return cfg.Addr, nil
}

// EventTimes returns the times at which the process logged the state machine event kind
// (became_coordinator, declared_dead, …).
func EventTimes(p *Proc, kind string) ([]time.Time, error) {
	lines, err := readLines(p.LogPath)
	if err != nil {
		return nil, err
	}
	var out []time.Time
	for _, l := range lines {
		if l["msg"] == "event" && l["kind"] == kind {
			ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(l["time"]))
			if err != nil {
				return nil, err
			}
			out = append(out, ts)
		}
	}
	return out, nil
}
