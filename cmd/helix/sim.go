package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/helixcoord/helix/scenarios"
	"github.com/helixcoord/helix/sim"
)

func init() {
	register(&command{name: "sim", summary: "run the deterministic simulator over built-in or custom scenarios", run: runSim})
}

const simUsage = `Usage:
  helix sim list
  helix sim run [--scenario NAME|FILE ...] [--seed N | --seeds K] [--json]
                [--timeline FILE.html] [--check-determinism [--shuffle]] [--log FILE]

The simulator runs the real engine nodes against the in-memory store in virtual time,
injects the scenario's faults, and checks the safety invariants (S1–S4) after every
event and liveness (L1–L4) after the faults stop. The same scenario and seed always give
the same run: a violation prints the command that replays it.

run flags:
  --scenario NAME|FILE  a built-in scenario (see 'helix sim list') or a JSON file;
                        repeat it for several; default: every built-in scenario
  --seed N              run exactly seed N
  --seeds K             run seeds 1..K (default 1)
  --json                print the summaries as JSON instead of a table
  --timeline FILE.html  write an HTML/SVG timeline of one run (the first failing seed,
                        else the first seed); needs exactly one scenario
  --check-determinism   run each seed twice and report the first divergence
  --shuffle             with --check-determinism: the two runs see the store's list
                        replies in different orders (a correct engine does not care)
  --log FILE            write the event log of each run to FILE ('-' for stderr)
  --coverage            after the table, print each scenario's coverage counters: how
                        often each fault was injected and each interesting state reached

Exit status: 0 if every seed passed (no violation, or exactly the one a scenario
expects), 1 otherwise, 2 on bad usage.

Examples:
  helix sim list
  helix sim run --scenario coordinator-crash --seeds 100
  helix sim run --scenario coordinator-pause --seed 7 --timeline pause.html
  helix sim run --scenario swarm --seeds 1000 --json > swarm.json
  helix sim run --scenario ./my-scenario.json --seed 3 --check-determinism
  helix sim run --seeds 20          # every built-in scenario, 20 seeds each
`

func runSim(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stdout, simUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "list":
		if len(args) > 1 {
			fmt.Fprintf(e.stderr, "helix sim list: unexpected argument %q\n", args[1])
			return 2
		}
		return simList(e)
	case "run":
		return simRun(ctx, e, args[1:])
	}
	fmt.Fprintf(e.stderr, "helix sim: unknown subcommand %q (want list or run)\n\n%s", args[0], simUsage)
	return 2
}

func simList(e *env) int {
	names := scenarios.Names()
	width := 0
	for _, n := range names {
		width = max(width, len(n))
	}
	for _, n := range names {
		sc, err := scenarios.Builtin(n)
		if err != nil {
			fmt.Fprintf(e.stderr, "helix sim list: %v\n", err)
			return 1
		}
		desc := sc.Description
		if i := strings.IndexAny(desc, ":;"); i > 0 && i < 90 {
			desc = desc[:i]
		}
		if len(desc) > 100 {
			desc = desc[:97] + "..."
		}
		extra := ""
		if sc.Expect.Violation != "" {
			extra = " [expects " + sc.Expect.Violation + "]"
		}
		fmt.Fprintf(e.stdout, "%-*s  %s%s\n", width, n, desc, extra)
	}
	return 0
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func simRun(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("helix sim run", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(e.stderr, simUsage) }
	var names multiFlag
	fs.Var(&names, "scenario", "scenario name or file (repeatable)")
	seed := fs.Int64("seed", -1, "run exactly this seed")
	seeds := fs.Int("seeds", 1, "run seeds 1..K")
	asJSON := fs.Bool("json", false, "print JSON")
	timeline := fs.String("timeline", "", "write an HTML timeline")
	checkDet := fs.Bool("check-determinism", false, "run each seed twice and compare")
	shuffle := fs.Bool("shuffle", false, "with --check-determinism, shuffle list replies differently in each run")
	logFile := fs.String("log", "", "write event logs to FILE ('-' for stderr)")
	coverage := fs.Bool("coverage", false, "print the coverage counters of each scenario")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "helix sim run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	seedSet := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "seeds" {
			seedSet = true
		}
	})
	if *seed >= 0 && seedSet {
		fmt.Fprintln(e.stderr, "helix sim run: --seed and --seeds are exclusive")
		return 2
	}
	if *seeds < 1 {
		fmt.Fprintln(e.stderr, "helix sim run: --seeds must be ≥ 1")
		return 2
	}
	if *shuffle && !*checkDet {
		fmt.Fprintln(e.stderr, "helix sim run: --shuffle needs --check-determinism")
		return 2
	}
	if len(names) == 0 {
		names = scenarios.Names()
	}
	if *timeline != "" && len(names) != 1 {
		fmt.Fprintln(e.stderr, "helix sim run: --timeline needs exactly one --scenario")
		return 2
	}
	var scs []*sim.Scenario
	for _, n := range names {
		sc, err := scenarios.Load(n)
		if err != nil {
			fmt.Fprintf(e.stderr, "helix sim run: %v\n", err)
			return 2
		}
		scs = append(scs, sc)
	}
	seedList := make([]uint64, 0, *seeds)
	if *seed >= 0 {
		seedList = append(seedList, uint64(*seed))
	} else {
		for i := 1; i <= *seeds; i++ {
			seedList = append(seedList, uint64(i))
		}
	}
	var logW io.Writer
	switch *logFile {
	case "":
	case "-":
		logW = e.stderr
	default:
		f, err := os.Create(*logFile)
		if err != nil {
			fmt.Fprintf(e.stderr, "helix sim run: --log: %v\n", err)
			return 1
		}
		defer f.Close()
		logW = f
	}

	failed := false
	var sums []*sim.Summary
	total := len(scs) * len(seedList)
	done := 0
	start := time.Now() // wall time, for the speed column and the progress line only
	lastProgress := start
	progressWidth := 0 // widest progress line written, so the last one can be cleared
	tty := isTerminal(e.stderr)
	progressEvery := 5 * time.Second
	if tty {
		progressEvery = 500 * time.Millisecond
	}
	for i, sc := range scs {
		ref := names[i] // how the replay command names it
		sum := &sim.Summary{Scenario: sc.Name}
		var tlResult *sim.Result
		scStart := time.Now()
		for _, sd := range seedList {
			if ctx.Err() != nil {
				fmt.Fprintln(e.stderr, "\nhelix sim run: interrupted")
				return 1
			}
			opt := sim.Options{Seed: sd, Timeline: *timeline != "", Ref: ref}
			var r *sim.Result
			if *checkDet {
				opt.ForceShuffle = *shuffle
				b := uint64(0)
				if *shuffle {
					b = 1
				}
				d, err := sim.CheckDeterminism(sc, opt, 0, b)
				if err != nil {
					fmt.Fprintf(e.stderr, "helix sim run: %v\n", err)
					return 1
				}
				sum.AddDivergence(d)
				if !d.Identical {
					failed = true
					fmt.Fprintln(e.stdout, d.String())
				} else if len(seedList)*len(scs) <= 10 {
					fmt.Fprintln(e.stdout, d.String())
				}
				if logW == nil {
					r = d.ResultA // the first run of the check had the same options
				}
			}
			if r == nil {
				if logW != nil {
					fmt.Fprintf(logW, "== %s seed %d\n", sc.Name, sd)
					opt.Log = logW
				}
				var err error
				if r, err = sim.Run(sc, opt); err != nil {
					fmt.Fprintf(e.stderr, "helix sim run: %v\n", err)
					return 1
				}
			}
			sum.Add(r)
			if tlResult == nil || (!r.Passed && tlResult.Passed) {
				tlResult = r
			}
			if r.Violation != nil && (!r.Passed || len(seedList) == 1) {
				// Unexpected violations are shown in full, the first few only (the summary
				// lists the failing seeds); an expected one only when a single seed was
				// asked for.
				if r.Passed || sum.Violations+sum.Failed <= 3 {
					fmt.Fprintln(e.stdout, r.Violation.String())
				}
			} else if !r.Passed {
				fmt.Fprintf(e.stdout, "MISSING EXPECTED VIOLATION %s in scenario %s, seed %d: the run ended without it\nreplay: helix sim run --scenario %s --seed %d\n\n",
					sc.Expect.Violation, sc.Name, sd, ref, sd)
			}
			done++
			// Progress: rewritten in place on a terminal; into a log or pipe, a plain line
			// every few seconds.
			if now := time.Now(); total > 1 && now.Sub(lastProgress) > progressEvery {
				lastProgress = now
				line := fmt.Sprintf("[%s] %d/%d runs, %d failed, %.0fs elapsed", sc.Name, done, total, sum.Failed, now.Sub(start).Seconds())
				if tty {
					fmt.Fprintf(e.stderr, "\r%-*s", progressWidth, line)
					progressWidth = max(progressWidth, len(line))
				} else {
					fmt.Fprintln(e.stderr, line)
				}
			}
		}
		sum.SetWall(time.Since(scStart))
		if !sum.OK() {
			failed = true
		}
		sums = append(sums, sum)
		if *timeline != "" && tlResult != nil && tlResult.Timeline != nil {
			if err := writeTimeline(*timeline, tlResult.Timeline); err != nil {
				fmt.Fprintf(e.stderr, "helix sim run: --timeline: %v\n", err)
				return 1
			}
			fmt.Fprintf(e.stderr, "timeline of %s seed %d written to %s\n", sc.Name, tlResult.Seed, *timeline)
		}
	}
	if progressWidth > 0 { // clear the progress line before the table
		fmt.Fprintf(e.stderr, "\r%s\r", strings.Repeat(" ", progressWidth))
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sums); err != nil {
			fmt.Fprintf(e.stderr, "helix sim run: %v\n", err)
			return 1
		}
	} else {
		printSummaries(e.stdout, sums)
		if *coverage {
			for _, s := range sums {
				fmt.Fprintf(e.stdout, "\ncoverage of %s (%d seeds):\n", s.Scenario, s.Seeds)
				for _, k := range slices.Sorted(maps.Keys(s.Coverage)) {
					fmt.Fprintf(e.stdout, "  %-40s %d\n", k, s.Coverage[k])
				}
			}
		}
	}
	if failed {
		return 1
	}
	return 0
}

func writeTimeline(path string, tl *sim.Timeline) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := tl.WriteHTML(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func printSummaries(w io.Writer, sums []*sim.Summary) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tseeds\tviolations\texpected\tcoord failover p50/p99/max\tworker failover p50/p99/max\tmoved\tsim-s/wall-s\tresult")
	for _, s := range sums {
		res := s.Status()
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s/%s/%s\t%s/%s/%s\t%d\t%.0f\t%s\n", s.Scenario, s.Seeds, s.Violations, s.Expected,
			fmtDur(s.CoordP50), fmtDur(s.CoordP99), fmtDur(s.CoordMax), fmtDur(s.WorkerP50), fmtDur(s.WorkerP99), fmtDur(s.WorkerMax),
			s.Moves, s.Speed, res)
	}
	tw.Flush()
}

// isTerminal reports whether w is a character device (a terminal), where a progress line
// can be rewritten in place with a carriage return.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
