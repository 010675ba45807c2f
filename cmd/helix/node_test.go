package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

// Tests of the node, dev, tasklist, drain and status commands, and of the shared flag
// and DSN plumbing.

// syncBuffer is a bytes.Buffer safe for a command writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// helixCmd runs a command in-process with ctx and the given environment.
func helixCmd(ctx context.Context, vars map[string]string, args ...string) (int, *syncBuffer, *syncBuffer) {
	out, errb := &syncBuffer{}, &syncBuffer{}
	e := &env{stdin: strings.NewReader(""), stdout: out, stderr: errb, getenv: func(k string) string { return vars[k] }}
	return run(ctx, e, args), out, errb
}

func quick(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, out, errb := helixCmd(ctx, vars, args...)
	return code, out.String(), errb.String()
}

func TestCommandsHelpAndUsageErrors(t *testing.T) {
	for _, cmd := range []string{"node", "dev", "tasklist", "drain", "status"} {
		code, out, _ := quick(t, nil, cmd, "--help")
		if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "helix "+cmd) {
			t.Errorf("%s --help: exit %d, want 0 and usage with examples on stdout; got:\n%s", cmd, code, out)
		}
		if code, _, _ := quick(t, nil, cmd, "--no-such-flag"); code != 2 {
			t.Errorf("%s --no-such-flag: exit %d, want 2", cmd, code)
		}
	}
	for _, c := range []struct {
		args []string
		vars map[string]string
		code int
		want string
	}{
		{[]string{"node"}, nil, 1, "HELIX_DSN"},
		{[]string{"status"}, nil, 1, "HELIX_DSN"},
		{[]string{"node", "--id", "a", "--heartbeat", "2s"}, nil, 2, "config.DeadAfter"},
		{[]string{"node", "--id", "a", "--profile", "turbo"}, nil, 2, "--profile"},
		{[]string{"node", "--id", "a"}, map[string]string{"HELIX_LEASE_TTL": "soon"}, 2, "$HELIX_LEASE_TTL"},
		{[]string{"node", "--id", ""}, nil, 2, "config.NodeID"},
		{[]string{"tasklist", "put", "emails", "zero"}, nil, 2, "PARTITIONS"},
		{[]string{"tasklist", "put", "emails", "0"}, nil, 2, "tasklist.partitions"},
		{[]string{"tasklist", "put", "emails"}, nil, 2, "NAME PARTITIONS"},
		{[]string{"tasklist", "frobnicate"}, nil, 2, "unknown subcommand"},
		{[]string{"drain"}, nil, 2, "NODE"},
		{[]string{"dev", "--nodes", "0"}, nil, 2, "--nodes"},
		{[]string{"dev", "--tasklists", "nope"}, nil, 2, "domain/name:partitions"},
	} {
		code, _, errOut := quick(t, c.vars, c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("helix %s: exit %d, stderr %q; want exit %d and a message naming %q", strings.Join(c.args, " "), code, errOut, c.code, c.want)
		}
	}
}

func TestLoadDSN(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "dsn")
	if err := os.WriteFile(file, []byte("u:p@tcp(h:3306)/fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	mk := func(vars map[string]string) *env { return &env{getenv: func(k string) string { return vars[k] }} }
	for _, c := range []struct {
		vars    map[string]string
		flag    string
		want    string
		wantErr string
	}{
		{map[string]string{"HELIX_DSN": "u@tcp(h)/env"}, "", "u@tcp(h)/env", ""},
		{map[string]string{"HELIX_DSN": "u@tcp(h)/env"}, file, "u:p@tcp(h:3306)/fromfile", ""}, // the flag wins
		{map[string]string{"HELIX_DSN_FILE": file}, "", "u:p@tcp(h:3306)/fromfile", ""},
		// parseFlags fills --dsn-file from HELIX_DSN_FILE; HELIX_DSN still goes first.
		{map[string]string{"HELIX_DSN": "u@tcp(h)/env", "HELIX_DSN_FILE": file}, file, "u@tcp(h)/env", ""},
		{nil, "", "", "HELIX_DSN"},
		{nil, empty, "", "empty"},
		{nil, filepath.Join(dir, "missing"), "", "reading DSN file"},
	} {
		got, err := loadDSN(mk(c.vars), c.flag)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("loadDSN(%v, %q) = %q, %v; want an error naming %q", c.vars, c.flag, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("loadDSN(%v, %q) = %q, %v; want %q", c.vars, c.flag, got, err, c.want)
		}
	}
}

var urlRE = regexp.MustCompile(`http://(127\.0\.0\.1:\d+)/status`)

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		_ = json.Unmarshal(b, v)
	}
	return resp.StatusCode
}

func pollUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDev starts `helix dev` as the README does (plus a free port and fast timings),
// waits until its status page shows every partition owned, and stops it like Ctrl-C.
func TestDev(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errb := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		e := &env{stdin: strings.NewReader(""), stdout: out, stderr: errb, getenv: func(string) string { return "" }}
		done <- run(ctx, e, []string{"dev", "--http", "127.0.0.1:0", "--profile", "fast", "--log-level", "warn"})
	}()
	var addr string
	pollUntil(t, "the status URL on stdout", 10*time.Second, func() bool {
		if m := urlRE.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	var doc struct {
		Nodes   []json.RawMessage    `json:"nodes"`
		Cluster *helix.ClusterStatus `json:"cluster"`
	}
	pollUntil(t, "all 18 demo partitions owned, balanced over 3 nodes", 20*time.Second, func() bool {
		if getJSON(t, "http://"+addr+"/status", &doc) != 200 || doc.Cluster == nil {
			return false
		}
		cs := doc.Cluster
		if cs.Partitions != 18 || cs.Owned != 18 || len(cs.Nodes) != 3 || !cs.Coordinator.Held {
			return false
		}
		for _, n := range cs.Nodes {
			if n.Total != 6 {
				return false
			}
		}
		return true
	})
	if len(doc.Nodes) != 3 {
		t.Fatalf("/status lists %d nodes of this process, want 3", len(doc.Nodes))
	}
	for _, path := range []string{"/", "/healthz", "/readyz", "/metrics"} {
		if code := getJSON(t, "http://"+addr+path, nil); code != 200 {
			t.Errorf("GET %s: %d", path, code)
		}
	}
	// Drain through the dev endpoint: dev-2's partitions move to the others.
	resp, err := http.Post("http://"+addr+"/dev/drain?node=dev-2", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST /dev/drain: %v %v", err, resp)
	}
	resp.Body.Close()
	pollUntil(t, "dev-2 drained", 20*time.Second, func() bool {
		if getJSON(t, "http://"+addr+"/status", &doc) != 200 || doc.Cluster == nil {
			return false
		}
		for _, n := range doc.Cluster.Nodes {
			if n.ID == "dev-2" {
				return n.Total == 0 && n.State == "draining" && doc.Cluster.Owned == 18
			}
		}
		return false
	})

	cancel() // Ctrl-C
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("helix dev exited %d after Ctrl-C; stderr:\n%s", code, errb.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("helix dev did not stop within 15s of Ctrl-C")
	}
	if !strings.Contains(out.String(), "stopped") {
		t.Errorf("helix dev did not say it stopped:\n%s", out.String())
	}
}

// TestNodeAndAdminCommands runs `helix node` in-process against MariaDB with the admin
// commands around it: tasklist put/list/delete, status (text and JSON), drain.
func TestNodeAndAdminCommands(t *testing.T) {
	dsn := mysqltest.DSN(t)
	vars := map[string]string{"HELIX_DSN": dsn}
	if code, _, errOut := quick(t, vars, "migrate"); code != 0 {
		t.Fatalf("migrate: %d %s", code, errOut)
	}
	if code, out, errOut := quick(t, vars, "tasklist", "put", "--domain", "d", "jobs", "8"); code != 0 || !strings.Contains(out, "d/jobs: 8 partitions") {
		t.Fatalf("tasklist put: %d %q %q", code, out, errOut)
	}
	if code, out, _ := quick(t, vars, "tasklist", "put", "extra", "2"); code != 0 || !strings.Contains(out, "default/extra") {
		t.Fatalf("tasklist put (default domain): %d %q", code, out)
	}
	var tls []map[string]any
	code, out, _ := quick(t, vars, "tasklist", "list", "--json")
	if err := json.Unmarshal([]byte(out), &tls); code != 0 || err != nil || len(tls) != 2 {
		t.Fatalf("tasklist list --json: %d %v %q", code, err, out)
	}
	if code, _, _ := quick(t, vars, "tasklist", "delete", "extra"); code != 0 {
		t.Fatalf("tasklist delete: %d", code)
	}
	if code, _, errOut := quick(t, vars, "tasklist", "delete", "extra"); code != 1 || !strings.Contains(errOut, "not found") {
		t.Fatalf("tasklist delete of a missing task list: %d %q; want 1, not found", code, errOut)
	}
	if code, _, errOut := quick(t, vars, "drain", "ghost"); code != 1 || !strings.Contains(errOut, "not registered") {
		t.Fatalf("drain of an unknown node: %d %q", code, errOut)
	}

	// Two nodes, configured from the environment only (HELIX_ + flag name).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type exit struct {
		id   string
		code int
		err  *syncBuffer
	}
	done := make(chan exit, 2)
	for _, id := range []string{"a", "b"} {
		nodeVars := map[string]string{"HELIX_DSN": dsn, "HELIX_ID": id, "HELIX_PROFILE": "fast", "HELIX_HTTP": "127.0.0.1:0"}
		go func() {
			code, _, errb := helixCmd(ctx, nodeVars, "node")
			done <- exit{id, code, errb}
		}()
	}
	var cs helix.ClusterStatus
	status := func() bool {
		code, out, _ := quick(t, vars, "status", "--json")
		return code == 0 && json.Unmarshal([]byte(out), &cs) == nil
	}
	owns := func(want map[string]int) func() bool {
		return func() bool {
			if !status() || cs.Owned != 8 || len(cs.Handoffs) != 0 {
				return false
			}
			for _, n := range cs.Nodes {
				if n.Total != want[n.ID] {
					return false
				}
			}
			return len(cs.Nodes) == len(want)
		}
	}
	pollUntil(t, "a and b own 4 partitions each", 20*time.Second, owns(map[string]int{"a": 4, "b": 4}))
	if !cs.Coordinator.Held {
		t.Fatalf("status: no coordinator: %+v", cs.Coordinator)
	}
	if code, out, _ := quick(t, vars, "status"); code != 0 || !strings.Contains(out, "coordinator: "+cs.Coordinator.Owner) || !strings.Contains(out, "d/jobs=4") {
		t.Fatalf("status: %d\n%s", code, out)
	}
	if code, out, errOut := quick(t, vars, "drain", "--wait", "--timeout", "20s", "a"); code != 0 || !strings.Contains(out, "node a drained") {
		t.Fatalf("drain --wait a: %d %q %q", code, out, errOut)
	}
	pollUntil(t, "b owns everything", 10*time.Second, owns(map[string]int{"a": 0, "b": 8}))
	if code, _, _ := quick(t, vars, "drain", "--undrain", "a"); code != 0 {
		t.Fatal("undrain failed")
	}
	pollUntil(t, "rebalanced after undrain", 20*time.Second, owns(map[string]int{"a": 4, "b": 4}))

	cancel() // SIGTERM to both
	for range 2 {
		select {
		case x := <-done:
			if x.code != 0 {
				t.Fatalf("helix node %s exited %d after SIGTERM; stderr:\n%s", x.id, x.code, x.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("helix node did not exit within 20s of SIGTERM")
		}
	}
	if !status() || cs.Coordinator.Held || cs.Owned != 0 {
		t.Fatalf("after SIGTERM: coordinator %+v, owned %d; want the lease released, nothing owned", cs.Coordinator, cs.Owned)
	}
	for _, n := range cs.Nodes {
		if n.State != "dead" {
			t.Fatalf("after SIGTERM node %s is %s, want deregistered (dead)", n.ID, n.State)
		}
	}
}
