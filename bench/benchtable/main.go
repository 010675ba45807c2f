// Command benchtable turns the output of `go test -bench` (read from stdin) into a
// markdown table per benchmark family: one row per benchmark result, with time per op in a readable unit,
// bytes and allocations per op, and one column for every custom metric reported with
// b.ReportMetric, whatever its unit. Lines that are not results (goos, pkg, PASS, logs)
// are skipped; failures are listed after the table and make the exit status 1.
//
// Usage: go test -run '^$' -bench . -benchmem ./bench/ | go run ./bench/benchtable
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// result is one benchmark line.
type result struct {
	name    string
	iters   string
	metrics map[string]float64
}

// table is everything parsed from one run.
type table struct {
	results  []result
	units    []string // custom metric units in first-seen order
	failures []string
}

var procSuffix = regexp.MustCompile(`-\d+$`)

// standard units get their own columns, before the custom ones.
var standard = map[string]bool{"ns/op": true, "B/op": true, "allocs/op": true, "MB/s": true}

func parse(r io.Reader) (*table, error) {
	t := &table{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--- FAIL") || strings.HasPrefix(trimmed, "FAIL") || strings.HasPrefix(trimmed, "panic:") {
			t.failures = append(t.failures, trimmed)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		// name, iterations, then value/unit pairs.
		if len(f) < 4 || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue
		}
		res := result{name: procSuffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), ""), iters: f[1], metrics: map[string]float64{}}
		ok := true
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				ok = false
				break
			}
			unit := f[i+1]
			res.metrics[unit] = v
			if !standard[unit] && !seen[unit] {
				seen[unit] = true
				t.units = append(t.units, unit)
			}
		}
		if ok {
			t.results = append(t.results, res)
		}
	}
	return t, sc.Err()
}

// duration formats nanoseconds with three significant digits.
func duration(ns float64) string {
	switch {
	case ns < 1e3:
		return sig(ns) + " ns"
	case ns < 1e6:
		return sig(ns/1e3) + " µs"
	case ns < 1e9:
		return sig(ns/1e6) + " ms"
	}
	return sig(ns/1e9) + " s"
}

func bytes(b float64) string {
	switch {
	case b < 1<<10:
		return fmt.Sprintf("%.0f B", b)
	case b < 1<<20:
		return sig(b/(1<<10)) + " KiB"
	case b < 1<<30:
		return sig(b/(1<<20)) + " MiB"
	}
	return sig(b/(1<<30)) + " GiB"
}

// sig prints v with three significant digits, no exponent, no trailing zeros.
func sig(v float64) string {
	if v == 0 {
		return "0"
	}
	prec := 0
	for a := abs(v); a < 100 && prec < 6; a *= 10 {
		prec++
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

// write prints one table per benchmark family (the name before the first "/"), each
// with only the columns its rows have: one wide table of every metric would be mostly
// empty cells.
func (t *table) write(w io.Writer) {
	var families []string
	byFamily := map[string][]result{}
	for _, r := range t.results {
		f, _, _ := strings.Cut(r.name, "/")
		if _, ok := byFamily[f]; !ok {
			families = append(families, f)
		}
		byFamily[f] = append(byFamily[f], r)
	}
	for i, f := range families {
		if i > 0 {
			fmt.Fprintln(w)
		}
		writeFamily(w, byFamily[f], t.units)
	}
}

func writeFamily(w io.Writer, results []result, units []string) {
	has := func(unit string) bool {
		for _, r := range results {
			if _, ok := r.metrics[unit]; ok {
				return true
			}
		}
		return false
	}
	type column struct {
		unit   string
		format func(float64) string
	}
	cols := []column{{"ns/op", duration}}
	for _, c := range []column{{"B/op", bytes}, {"allocs/op", func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }}, {"MB/s", sig}} {
		if has(c.unit) {
			cols = append(cols, c)
		}
	}
	for _, u := range units {
		if has(u) {
			cols = append(cols, column{u, sig})
		}
	}
	head := []string{"benchmark", "runs"}
	for _, c := range cols {
		if c.unit == "ns/op" {
			head = append(head, "time/op")
		} else {
			head = append(head, c.unit)
		}
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(head, " | "))
	align := make([]string, len(head))
	for i := range align {
		align[i] = "---:"
	}
	align[0] = "---"
	fmt.Fprintf(w, "|%s|\n", strings.Join(align, "|"))
	for _, r := range results {
		row := []string{r.name, r.iters}
		for _, c := range cols {
			cell := ""
			if v, ok := r.metrics[c.unit]; ok {
				cell = c.format(v)
			}
			row = append(row, cell)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
}

func main() {
	t, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchtable: reading benchmark output: %v\n", err)
		os.Exit(1)
	}
	if len(t.results) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable: no benchmark results in the input")
	} else {
		t.write(os.Stdout)
	}
	if len(t.failures) > 0 {
		fmt.Fprintln(os.Stdout)
		fmt.Fprintln(os.Stdout, "Failures:")
		for _, f := range t.failures {
			fmt.Fprintf(os.Stdout, "- `%s`\n", f)
		}
		os.Exit(1)
	}
}
