package main

import (
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/helixcoord/helix/bench
cpu: Some CPU @ 2.0GHz
BenchmarkAlloc/1kx10/scratch-2         	    1234	     95012 ns/op	         1.000 moves/min	      1000 moves/op	         0 spread	  143000 B/op	      51 allocs/op
BenchmarkAlloc/1Mx10k/join-2           	       3	 234865674 ns/op	         1.000 moves/min	         0 moves/op	       100.0 spread	72439018 B/op	     122 allocs/op
BenchmarkSim/seeds	       1	2500000000 ns/op	       12.50 events/µs	  3.0 p99-ms
some log line
--- FAIL: BenchmarkBroken
PASS
ok  	github.com/helixcoord/helix/bench	3.261s
`

func TestParseAndWrite(t *testing.T) {
	tb, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(tb.results) != 3 {
		t.Fatalf("%d results, want 3", len(tb.results))
	}
	if got := strings.Join(tb.units, ","); got != "moves/min,moves/op,spread,events/µs,p99-ms" {
		t.Errorf("custom units %q", got)
	}
	if len(tb.failures) != 1 {
		t.Errorf("failures %v, want the one FAIL line", tb.failures)
	}
	var b strings.Builder
	tb.write(&b)
	out := b.String()
	for _, want := range []string{
		// One table per family, each with only its own columns.
		"| benchmark | runs | time/op | B/op | allocs/op | moves/min | moves/op | spread |\n|---|---:|---:|---:|---:|---:|---:|---:|\n" +
			"| Alloc/1kx10/scratch | 1234 | 95 µs | 140 KiB | 51 | 1 | 1000 | 0 |\n" +
			"| Alloc/1Mx10k/join | 3 | 235 ms | 69.1 MiB | 122 | 1 | 0 | 100 |\n\n",
		"| benchmark | runs | time/op | events/µs | p99-ms |\n|---|---:|---:|---:|---:|\n| Sim/seeds | 1 | 2.5 s | 12.5 | 3 |\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{duration(999), "999 ns"}, {duration(1500), "1.5 µs"}, {duration(4_300_000), "4.3 ms"},
		{bytes(512), "512 B"}, {bytes(2048), "2 KiB"}, {sig(0.001234), "0.00123"}, {sig(123456), "123456"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
