// Command mutants is helix's mutation harness: it plants each deliberate bug of its list
// (list.go) as a source patch in a temporary copy of the module, then measures whether
// the simulator alone, and the whole test suite, notice.
//
//	go run ./mutants                  # every mutant: simulator (30 seeds) and suite
//	go run ./mutants -run 'Store' -j 1
//	go run ./mutants -sim-only -seeds 50
//	go run ./mutants -check           # only verify that every anchor still applies
//
// Nothing here is compiled into helix: the engine and the store carry no switch that
// turns their safety off; a bug exists only in the temporary copy the harness patched.
//
// "The simulator alone" is every built-in scenario, seeds 1..N taken seed by seed, each
// run twice with the store's list replies in two different orders, exactly what
// `helix sim run --seeds N --check-determinism --shuffle` checks: a violation, a
// missing expected violation, a divergence between the two runs, a panic or a hang
// catches the mutant. The seed at which it is first caught is "seeds needed".
//
// "The suite" is `go test` of every package that runs the engine or the store
// (engine/memstore, engine, sim, scenarios, the SDK, cmd/helix; one after the other
// until one fails), without MySQL: no mutant touches the MySQL store.
//
// The harness re-runs itself (with -simcheck) inside each patched copy, so the
// simulator it runs is the mutated one.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// suitePkgs are run one after the other, quickest first, until one fails. The harness's
// own tests are not among them: they check that every anchor applies, which a planted
// mutant's own patch no longer does.
var suitePkgs = []string{"./engine/memstore", "./engine", "./sim", "./scenarios", ".", "./cmd/helix"}

func main() {
	seeds := flag.Int("seeds", 30, "seeds of every built-in scenario the simulator gets to catch a mutant")
	jobs := flag.Int("j", 2, "mutants run at once (each in its own temporary copy of the tree)")
	runRe := flag.String("run", "", "only mutants whose name matches this regular expression")
	simOnly := flag.Bool("sim-only", false, "run only the simulator, not the suite")
	suiteOnly := flag.Bool("suite-only", false, "run only the suite, not the simulator")
	skipControl := flag.Bool("skip-control", false, "do not check first that the unmutated tree passes")
	keep := flag.Bool("keep", false, "keep the temporary trees (their paths are printed)")
	check := flag.Bool("check", false, "only check that every mutant's anchors apply to this tree")
	list := flag.Bool("list", false, "list the mutants and exit")
	only := flag.String("scenarios", "", "comma-separated built-in scenarios the simulator runs (default: all)")
	simcheck := flag.Bool("simcheck", false, "internal: run the simulator check in this tree and report the first catch")
	flag.Parse()

	if *simcheck {
		os.Exit(runSimcheck(*seeds, *only))
	}
	if *list {
		for _, m := range mutants {
			fmt.Printf("%-32s %-12s %s\n", m.Name, m.Area, m.Breaks)
		}
		return
	}
	root, err := moduleRoot()
	if err != nil {
		fatal(err)
	}
	if *check {
		if err := checkAnchors(root, mutants); err != nil {
			fatal(err)
		}
		fmt.Printf("all %d mutants apply\n", len(mutants))
		return
	}
	var sel []Mutant
	re, err := regexp.Compile(*runRe)
	if err != nil {
		fatal(fmt.Errorf("-run: %w", err))
	}
	for _, m := range mutants {
		if re.MatchString(m.Name) {
			sel = append(sel, m)
		}
	}
	if len(sel) == 0 {
		fatal(fmt.Errorf("-run %q matches no mutant", *runRe))
	}
	// Every anchor must apply before anything runs: a stale anchor fails at once.
	if err := checkAnchors(root, sel); err != nil {
		fatal(err)
	}
	files, err := treeFiles(root)
	if err != nil {
		fatal(err)
	}
	h := &harness{root: root, files: files, seeds: *seeds, scenarios: *only, sim: !*suiteOnly, suite: !*simOnly, keep: *keep}
	// Snapshot the tree now: edits made while the harness runs must not reach the
	// mutants that start later.
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			fatal(err)
		}
		h.contents = append(h.contents, b)
	}
	start := time.Now()
	if !*skipControl {
		fmt.Printf("control: the unmutated tree must pass (simulator %d seeds, suite)…\n", *seeds)
		r := h.run(Mutant{Name: "control"})
		if r.err != nil || r.simCaught || r.suiteCaught {
			fmt.Print(r.detail())
			fatal(errors.New("the unmutated tree does not pass: the scores would mean nothing"))
		}
		fmt.Printf("control passed in %s\n", r.took.Round(time.Second))
	}
	results := make([]result, len(sel))
	var mu sync.Mutex
	done := 0
	work := make(chan int)
	var wg sync.WaitGroup
	for range max(*jobs, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				r := h.run(sel[i])
				mu.Lock()
				results[i] = r
				done++
				fmt.Printf("[%2d/%d] %s (%s elapsed)\n", done, len(sel), r.line(), time.Since(start).Round(time.Second))
				if r.err != nil {
					fmt.Print(r.detail())
				}
				mu.Unlock()
			}
		}()
	}
	for i := range sel {
		work <- i
	}
	close(work)
	wg.Wait()
	fmt.Println()
	printTable(os.Stdout, results, h)
	fmt.Printf("\nmutants: %d in %s with -j %d\n", len(sel), time.Since(start).Round(time.Second), *jobs)
	for _, r := range results {
		if r.err != nil {
			os.Exit(1)
		}
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "mutants:", err)
	os.Exit(2)
}

// moduleRoot is the directory of the go.mod above the working directory; it must be
// helix's.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the helix module")
	}
	b, err := os.ReadFile(mod)
	if err != nil {
		return "", err
	}
	if !bytes.Contains(b, []byte("module github.com/helixcoord/helix\n")) {
		return "", fmt.Errorf("%s is not helix's go.mod", mod)
	}
	return filepath.Dir(mod), nil
}

// treeFiles lists the files of the working tree that git knows or would add (tracked,
// and untracked but not ignored): what a copy needs to build and test.
func treeFiles(root string) ([]string, error) {
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-files: %w", err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f == "" {
			continue
		}
		if st, err := os.Stat(filepath.Join(root, f)); err == nil && st.Mode().IsRegular() {
			files = append(files, f) // a tracked file deleted in the working tree is skipped
		}
	}
	return files, nil
}

// checkAnchors applies every mutant to an in-memory copy of the files it patches.
func checkAnchors(root string, ms []Mutant) error {
	var errs []error
	for _, m := range ms {
		texts := map[string]string{}
		for i, p := range m.Patches {
			src, ok := texts[p.File]
			if !ok {
				b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(p.File)))
				if err != nil {
					errs = append(errs, fmt.Errorf("mutant %s, patch %d: %w", m.Name, i+1, err))
					break
				}
				src = string(b)
			}
			out, err := patchText(src, p)
			if err != nil {
				errs = append(errs, fmt.Errorf("mutant %s, patch %d: %w", m.Name, i+1, err))
				break
			}
			texts[p.File] = out
		}
	}
	return errors.Join(errs...)
}

type harness struct {
	root       string
	files      []string
	contents   [][]byte // the files as they were when the harness started
	seeds      int
	scenarios  string
	sim, suite bool
	keep       bool
}

// result is what one mutant's run found.
type result struct {
	m    Mutant
	err  error // the harness could not run it (copy, patch, build)
	took time.Duration

	simCaught bool
	simSeed   int    // first seed that caught it
	simBy     string // scenario and invariant
	simTook   time.Duration

	suiteCaught bool
	suiteBy     string // first failing test
	suiteTook   time.Duration

	out string // output of the failed step, for -keep and errors
	dir string
}

func (r result) line() string {
	if r.err != nil {
		return fmt.Sprintf("%s: ERROR %v", r.m.Name, r.err)
	}
	var b strings.Builder
	b.WriteString(r.m.Name + ":")
	if r.simTook > 0 {
		if r.simCaught {
			fmt.Fprintf(&b, " simulator caught it at seed %d (%s) in %s;", r.simSeed, r.simBy, r.simTook.Round(time.Second))
		} else {
			fmt.Fprintf(&b, " simulator MISSED it in %s;", r.simTook.Round(time.Second))
		}
	}
	if r.suiteTook > 0 {
		if r.suiteCaught {
			fmt.Fprintf(&b, " suite caught it (%s) in %s", r.suiteBy, r.suiteTook.Round(time.Second))
		} else {
			fmt.Fprintf(&b, " suite MISSED it in %s", r.suiteTook.Round(time.Second))
		}
	}
	if r.dir != "" {
		fmt.Fprintf(&b, " [tree kept at %s]", r.dir)
	}
	return b.String()
}

func (r result) detail() string {
	if r.out == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(r.out, "\n"), "\n")
	if len(lines) > 40 {
		lines = append([]string{"…"}, lines[len(lines)-40:]...)
	}
	return "    " + strings.Join(lines, "\n    ") + "\n"
}

// run copies the tree, plants the mutant, and runs the simulator and the suite on it.
func (h *harness) run(m Mutant) (r result) {
	r.m = m
	start := time.Now()
	defer func() { r.took = time.Since(start) }()
	dir, err := os.MkdirTemp("", "helix-mutant-"+m.Name+"-")
	if err != nil {
		r.err = err
		return r
	}
	if h.keep {
		r.dir = dir
	} else {
		defer os.RemoveAll(dir)
	}
	if err := h.copyTree(dir); err != nil {
		r.err = err
		return r
	}
	if err := m.apply(dir); err != nil {
		r.err = err
		return r
	}
	if h.sim {
		t0 := time.Now()
		bin := filepath.Join(dir, "simcheck.bin")
		if out, err := goCmd(context.Background(), dir, "build", "-trimpath", "-o", bin, "./mutants"); err != nil {
			r.err = fmt.Errorf("the mutated tree does not build: %v", err)
			r.out = out
			return r
		}
		r.simCaught, r.simSeed, r.simBy, r.out = simcheck(dir, bin, h.seeds, h.scenarios)
		r.simTook = time.Since(t0)
	}
	if h.suite {
		t0 := time.Now()
		r.suiteCaught, r.suiteBy = h.runSuite(dir)
		r.suiteTook = time.Since(t0)
	}
	return r
}

func (h *harness) copyTree(dir string) error {
	for i, f := range h.files {
		dst := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, h.contents[i], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// childEnv is the environment of the go commands run on a copy: no MySQL (no mutant
// touches it; and CI=true would turn its skips into failures), and a property test that
// fails shrinks for a few seconds only and writes no fail file: what failed is all the
// harness needs.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CI=") || strings.HasPrefix(kv, "HELIX_TEST_MYSQL_DSN=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "RAPID_SHRINKTIME=3s", "RAPID_NOFAILFILE=1")
}

func goCmd(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// simcheckTimeout bounds one mutant's simulator run: a mutant that makes the simulator
// hang is caught by it (CI would hang).
const simcheckTimeout = 20 * time.Minute

// simcheck runs the mutated simulator and parses its report.
func simcheck(dir, bin string, seeds int, only string) (caught bool, seed int, by, out string) {
	ctx, cancel := context.WithTimeout(context.Background(), simcheckTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-simcheck", "-seeds", fmt.Sprint(seeds), "-scenarios", only)
	cmd.Dir = dir
	cmd.Env = childEnv()
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	out = buf.String()
	lastSeed, lastScenario := 0, ""
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		var s int
		var name, inv string
		if n, _ := fmt.Sscanf(l, "RUN seed %d scenario %s", &s, &name); n == 2 {
			lastSeed, lastScenario = s, name
		}
		if n, _ := fmt.Sscanf(l, "CAUGHT seed %d scenario %s invariant %s", &s, &name, &inv); n == 3 {
			return true, s, name + " " + inv, out
		}
		if strings.HasPrefix(l, "PASSED") && err == nil {
			return false, 0, "", out
		}
	}
	switch {
	case ctx.Err() != nil:
		return true, lastSeed, lastScenario + " hang", out
	case err != nil:
		return true, lastSeed, lastScenario + " crash", out
	}
	return false, 0, "", out
}

var failLine = regexp.MustCompile(`--- FAIL: (\S+)`)
var failPkg = regexp.MustCompile(`(?m)^FAIL\s+(github\.com/helixcoord/helix\S*)`)

// runSuite runs the tests on the mutated tree and names the first failure.
func (h *harness) runSuite(dir string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var out string
	var err error
	for _, pkg := range suitePkgs {
		if out, err = goCmd(ctx, dir, "test", "-trimpath", "-count=1", "-failfast", "-timeout", "10m", pkg); err != nil {
			break
		}
	}
	if err == nil {
		return false, ""
	}
	pkg := ""
	if m := failPkg.FindStringSubmatch(out); m != nil {
		pkg = strings.TrimPrefix(m[1], "github.com/helixcoord/helix")
		pkg = strings.TrimPrefix(pkg, "/")
		if pkg == "" {
			pkg = "helix"
		}
	}
	if m := failLine.FindStringSubmatch(out); m != nil {
		return true, strings.TrimSpace(pkg + " " + m[1])
	}
	if strings.Contains(out, "build failed") || strings.Contains(out, "[build failed]") {
		return true, pkg + " (test build failed)"
	}
	return true, strings.TrimSpace(pkg + " (failed)")
}

func printTable(w io.Writer, rs []result, h *harness) {
	fmt.Fprintf(w, "| mutant | area | what it breaks | simulator alone (%d seeds): caught at seed, by | whole suite: first failing test |\n", h.seeds)
	fmt.Fprintln(w, "|---|---|---|---|---|")
	simN, simC, suiteN, suiteC, maxSeed := 0, 0, 0, 0, 0
	for _, r := range rs {
		sim, suite := "-", "-"
		if r.err != nil {
			sim, suite = "error", "error"
		}
		if r.simTook > 0 {
			simN++
			if r.simCaught {
				simC++
				maxSeed = max(maxSeed, r.simSeed)
				sim = fmt.Sprintf("%d, %s", r.simSeed, r.simBy)
			} else {
				sim = "**missed**"
			}
		}
		if r.suiteTook > 0 {
			suiteN++
			if r.suiteCaught {
				suiteC++
				suite = r.suiteBy
			} else {
				suite = "**missed**"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.m.Name, r.m.Area, r.m.Breaks, sim, suite)
	}
	if simN > 0 {
		fmt.Fprintf(w, "\nsimulator alone: %d/%d caught (%.0f%%), every catch within %d seeds\n", simC, simN, 100*float64(simC)/float64(simN), maxSeed)
	}
	if suiteN > 0 {
		fmt.Fprintf(w, "whole suite: %d/%d caught (%.0f%%)\n", suiteC, suiteN, 100*float64(suiteC)/float64(suiteN))
	}
}
