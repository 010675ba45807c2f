package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The overlap check is what the end-to-end test's safety verdict rests on: prove it
// flags what it must, from log lines in the nodes' format.

func writeLog(t *testing.T, dir, name string, lines ...string) *Proc {
	t.Helper()
	path := filepath.Join(dir, name+".log")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &Proc{ID: strings.Split(name, ".")[0], LogPath: path, done: make(chan struct{})}
	close(p.done) // exited
	p.Exited = base.Add(time.Hour)
	return p
}

var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func line(event, part string, gen int, at time.Duration, reason string) string {
	return fmt.Sprintf(`{"time":%q,"level":"INFO","msg":"demo","event":%q,"partition":%q,"generation":%d,"reason":%q}`,
		base.Add(at).Format(time.RFC3339Nano), event, part, gen, reason)
}

func TestOverlapsFlagsConcurrentProcessing(t *testing.T) {
	dir := t.TempDir()
	a := writeLog(t, dir, "a.0",
		line("partition_start", "d/t/0", 1, 0, ""),
		line("partition_stop", "d/t/0", 1, 2*time.Second, "released"),
		line("partition_start", "d/t/1", 1, 0, ""),
		line("partition_stop", "d/t/1", 1, 5*time.Second, "self-fenced"),
		`not json: ignored`)
	b := writeLog(t, dir, "b.0",
		line("partition_start", "d/t/0", 2, 2*time.Second+time.Millisecond, ""), // after a's stop: fine
		line("partition_stop", "d/t/0", 2, 9*time.Second, "shutdown"),
		line("partition_start", "d/t/1", 2, 4*time.Second, ""), // a still processes it: overlap
		line("partition_stop", "d/t/1", 2, 9*time.Second, "shutdown"))
	ivs, err := Intervals([]*Proc{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if len(ivs) != 4 {
		t.Fatalf("%d intervals, want 4: %+v", len(ivs), ivs)
	}
	bad := Overlaps(ivs)
	if len(bad) != 1 || !strings.Contains(bad[0], "d/t/1") || !strings.Contains(bad[0], "overlap 1s") {
		t.Fatalf("Overlaps = %q, want exactly the 1s overlap on d/t/1", bad)
	}
}

// A long interval overlaps every later one that starts inside it, not only the next.
func TestOverlapsFlagsEveryIntervalInsideALongOne(t *testing.T) {
	dir := t.TempDir()
	long := writeLog(t, dir, "a.0",
		line("partition_start", "d/t/0", 1, 0, ""),
		line("partition_stop", "d/t/0", 1, 10*time.Second, "self-fenced"))
	short := writeLog(t, dir, "b.0",
		line("partition_start", "d/t/0", 2, time.Second, ""),
		line("partition_stop", "d/t/0", 2, 2*time.Second, "released"))
	later := writeLog(t, dir, "c.0",
		line("partition_start", "d/t/0", 3, 5*time.Second, ""),
		line("partition_stop", "d/t/0", 3, 6*time.Second, "released"))
	ivs, err := Intervals([]*Proc{long, short, later})
	if err != nil {
		t.Fatal(err)
	}
	bad := Overlaps(ivs)
	if len(bad) != 2 || !strings.Contains(bad[0], "overlap 9s") || !strings.Contains(bad[1], "overlap 5s") {
		t.Fatalf("Overlaps = %q, want b.0 and c.0 each flagged against a.0", bad)
	}
}

func TestOverlapsKilledAndUnstoppedProcesses(t *testing.T) {
	dir := t.TempDir()
	killed := writeLog(t, dir, "a.0", line("partition_start", "d/t/0", 1, 0, ""))
	killed.Killed = base.Add(3 * time.Second) // its open interval ends at its death
	later := writeLog(t, dir, "b.0",
		line("partition_start", "d/t/0", 2, 2*time.Second, ""), // before the death: overlap
		line("partition_stop", "d/t/0", 2, 4*time.Second, "released"),
		line("partition_start", "d/t/1", 1, 0, "")) // exited without a stop line
	ivs, err := Intervals([]*Proc{killed, later})
	if err != nil {
		t.Fatal(err)
	}
	bad := Overlaps(ivs)
	joined := strings.Join(bad, "\n")
	if len(bad) != 2 || !strings.Contains(joined, "overlap 1s") || !strings.Contains(joined, "no stop line") {
		t.Fatalf("Overlaps = %q, want the overlap with the killed process and the missing stop", bad)
	}

	// Generations must grow from one owner to the next.
	dir2 := t.TempDir()
	x := writeLog(t, dir2, "x.0", line("partition_start", "d/t/0", 5, 0, ""), line("partition_stop", "d/t/0", 5, time.Second, "released"))
	y := writeLog(t, dir2, "y.0", line("partition_start", "d/t/0", 5, 2*time.Second, ""), line("partition_stop", "d/t/0", 5, 3*time.Second, "released"))
	ivs, _ = Intervals([]*Proc{x, y})
	if bad := Overlaps(ivs); len(bad) != 1 || !strings.Contains(bad[0], "generation 5") {
		t.Fatalf("Overlaps = %q, want the non-growing generation flagged", bad)
	}
}

func TestIntervalsRejectsMalformedSequences(t *testing.T) {
	dir := t.TempDir()
	p := writeLog(t, dir, "a.0", line("partition_stop", "d/t/0", 1, 0, "released"))
	if _, err := Intervals([]*Proc{p}); err == nil || !strings.Contains(err.Error(), "without a start") {
		t.Fatalf("stop without start: err = %v", err)
	}
	q := writeLog(t, dir, "b.0", line("partition_start", "d/t/0", 1, 0, ""), line("partition_start", "d/t/0", 1, 0, ""))
	if _, err := Intervals([]*Proc{q}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("double start: err = %v", err)
	}
}
