package main

import (
	"context"
	"encoding/json"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

// The test binary doubles as the helix binary for `helix node --exec`, which runs
// os.Executable() exec-guard … for each child.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "exec-guard" {
		e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
		os.Exit(run(context.Background(), e, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func TestSupervisionAndExecUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"node", "--id", "a", "--give-back-after", "-1"}, "--give-back-after"},
		{[]string{"node", "--id", "a", "--restart-jitter", "1"}, "config.RestartJitter"},
		{[]string{"node", "--id", "a", "--restart-base", "10s", "--restart-max", "1s"}, "config.RestartMax"},
		{[]string{"node", "--id", "a", "--exec", "true", "--exec-grace", "10s"}, "--exec-grace"},
		{[]string{"coordinator", "--id", "c", "--exec", "true"}, "--no-work"},
		{[]string{"coordinator", "--id", "c", "--no-candidate"}, "config.NoWork"},
	} {
		code, _, errOut := quick(t, nil, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("helix %s: exit %d, stderr %q; want 2 and a message naming %q", strings.Join(c.args, " "), code, errOut, c.want)
		}
	}
	code, out, _ := quick(t, nil, "coordinator", "--help")
	if code != 0 || !strings.Contains(out, "dedicated coordinator") || !strings.Contains(out, "--no-work") {
		t.Errorf("coordinator --help: exit %d\n%s", code, out)
	}
	if code, out, _ := quick(t, nil, "node", "--help"); code != 0 || !strings.Contains(out, "--exec") || !strings.Contains(out, "--give-back-after") {
		t.Errorf("node --help lacks the supervision and exec flags: exit %d", code)
	}
}

// A dedicated coordinator and an --exec worker on MariaDB: the coordinator holds the
// lease and owns nothing; the worker runs one child per partition, whose output shows
// up as log lines labelled with the partition; a child that exits is restarted with the
// same generation.
func TestCoordinatorAndExecNode(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("--exec needs Linux")
	}
	dsn := mysqltest.DSN(t)
	vars := map[string]string{"HELIX_DSN": dsn}
	if code, _, errOut := quick(t, vars, "migrate"); code != 0 {
		t.Fatalf("migrate: %d %s", code, errOut)
	}
	if code, _, errOut := quick(t, vars, "tasklist", "put", "--domain", "d", "jobs", "2"); code != 0 {
		t.Fatalf("tasklist put: %s", errOut)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type exit struct {
		code int
		err  *syncBuffer
	}
	coordDone, workerDone := make(chan exit, 1), make(chan exit, 1)
	go func() {
		code, _, errb := helixCmd(ctx, map[string]string{"HELIX_DSN": dsn, "HELIX_PROFILE": "fast", "HELIX_HTTP": "127.0.0.1:0"}, "coordinator", "--id", "coord")
		coordDone <- exit{code, errb}
	}()
	pollUntil(t, "the dedicated coordinator holds the lease", 20*time.Second, func() bool {
		var cs helix.ClusterStatus
		code, out, _ := quick(t, vars, "status", "--json")
		return code == 0 && json.Unmarshal([]byte(out), &cs) == nil && cs.Coordinator.Owner == "coord"
	})
	// Each child says hello and exits after 300ms the first time (a marker file per
	// partition), then runs until stopped.
	dir := t.TempDir()
	child := `echo "hello from $HELIX_DOMAIN/$HELIX_TASKLIST/$HELIX_PARTITION gen $HELIX_GENERATION deadline $(cut -d' ' -f1 $HELIX_DEADLINE_FILE)"; ` +
		`m=` + dir + `/$HELIX_PARTITION; if [ ! -e $m ]; then touch $m; sleep 0.3; exit 3; fi; exec sleep 60`
	wvars := map[string]string{"HELIX_DSN": dsn, "HELIX_PROFILE": "fast", "HELIX_HTTP": "127.0.0.1:0"}
	wlog := &syncBuffer{}
	we := &env{stdin: strings.NewReader(""), stdout: &syncBuffer{}, stderr: wlog, getenv: func(k string) string { return wvars[k] }}
	go func() {
		code := run(ctx, we, []string{"node", "--id", "w", "--no-candidate", "--exec", child, "--exec-grace", "500ms",
			"--restart-base", "200ms", "--log-format", "json"})
		workerDone <- exit{code, wlog}
	}()
	var cs helix.ClusterStatus
	pollUntil(t, "w owns both partitions, coord none", 20*time.Second, func() bool {
		code, out, _ := quick(t, vars, "status", "--json")
		if code != 0 || json.Unmarshal([]byte(out), &cs) != nil || cs.Owned != 2 {
			return false
		}
		for _, n := range cs.Nodes {
			if n.ID == "w" && n.Total == 2 {
				return true
			}
		}
		return false
	})
	for _, n := range cs.Nodes {
		if n.ID == "coord" {
			t.Fatalf("the dedicated coordinator registered as a worker: %+v", n)
		}
	}
	// Wait for the restarts: each partition's child said hello twice.
	pollUntil(t, "both partitions' children restarted", 20*time.Second, func() bool {
		l := wlog.String()
		return strings.Count(l, `"kind":"partition_restarted"`) >= 2 && strings.Count(l, `"msg":"hello from `) >= 4
	})
	cancel()
	var w exit
	select {
	case w = <-workerDone:
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not exit")
	}
	<-coordDone
	if w.code != 0 {
		t.Fatalf("worker exited %d:\n%s", w.code, w.err)
	}
	hellos := map[string][]string{}
	restarted := 0
	for _, line := range strings.Split(w.err.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		msg, _ := m["msg"].(string)
		if strings.HasPrefix(msg, "hello from ") {
			part, _ := m["partition"].(string)
			if !strings.HasPrefix(msg, "hello from "+part+" gen ") || m["stream"] != "stdout" {
				t.Errorf("child output not labelled with its partition: %s", line)
			}
			f := strings.Fields(msg)
			hellos[part] = append(hellos[part], f[4])
		}
		if m["kind"] == "partition_restarted" {
			restarted++
		}
	}
	if len(hellos) != 2 || restarted < 2 {
		t.Fatalf("hellos %v, %d restarts; want two partitions, each restarted", hellos, restarted)
	}
	for part, gens := range hellos {
		if len(gens) < 2 || gens[0] != gens[1] {
			t.Errorf("%s: generations %v, want the same one at least twice (a restart keeps it)", part, gens)
		}
	}
}

func TestPrintGivenBack(t *testing.T) {
	var b strings.Builder
	printGivenBack(&b, nil)
	if b.Len() != 0 {
		t.Fatalf("no give-backs printed %q", b.String())
	}
	printGivenBack(&b, []helix.GivenBackSummary{
		{Partition: "d/t/0", By: "n1", Age: 90 * time.Second, Owner: "n2", Generation: 4},
		{Partition: "d/t/1", By: "n2", Age: time.Second, Generation: 7},
	})
	out := b.String()
	for _, want := range []string{"GIVEN BACK (last 1h0m0s)", "d/t/0  ", "n1", "1m30s", "n2", "unowned (failing?)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
