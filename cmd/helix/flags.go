package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/helixcoord/helix/engine"
)

// Shared flag plumbing of the node, dev and admin commands (tasklist, drain, status).
//
// Every flag can also come from the environment, and a flag given on the command line
// wins over it. Which variable a flag reads is scoped so that the environment meant
// for one command can never steer another (HELIX_UNDRAIN=true must not turn
// `helix drain w1` into an undrain, nor HELIX_CHECK=1 `helix migrate` into a check):
//
//   - settings that mean the same in every command — the connection (--dsn-file,
//     --cluster, --tls-*), the node's identity, timings and retention, --http, logging —
//     read HELIX_<FLAG>: --lease-ttl from HELIX_LEASE_TTL;
//   - every other flag belongs to its command — actions and options such as drain's
//     --undrain, migrate's --check, every --timeout, --json — and reads only
//     HELIX_<COMMAND>_<FLAG>: HELIX_DRAIN_UNDRAIN, HELIX_MIGRATE_CHECK.
//
// (upper-cased, dashes as underscores). --help shows each flag's variable.

// sharedFlags are the flags read from HELIX_<FLAG> by every command that has them.
var sharedFlags = map[string]bool{
	"dsn-file": true, "dsn": true, "cluster": true, "tls-ca": true, "tls-cert": true, "tls-key": true,
	"lease-key": true, "log-format": true, "log-level": true, "http": true,
	"id": true, "capacity": true, "labels": true, "no-work": true, "no-candidate": true, "profile": true,
	"lease-ttl": true, "renew": true, "retry": true, "heartbeat": true, "dead-after": true, "tick": true,
	"request-timeout": true, "safety-margin": true, "stop-timeout": true, "max-in-flight": true,
	"max-in-flight-per-worker": true, "node-retention": true,
	"restart-base": true, "restart-max": true, "restart-jitter": true, "restart-linear": true,
	"give-back-after": true, "give-back-window": true, "give-back-cool-down": true,
}

// envName is the environment variable of command cmd's flag (see sharedFlags).
func envName(cmd, flagName string) string {
	name := flagName
	if !sharedFlags[flagName] {
		name = cmd + "_" + flagName
	}
	return "HELIX_" + strings.ToUpper(strings.NewReplacer("-", "_", " ", "_").Replace(name))
}

// newFlagSet makes a command's FlagSet whose --help prints usage, the flags (with their
// environment variables) and examples.
func newFlagSet(e *env, name, usage, examples string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: %s\n\nFlags (each also read from the environment variable shown):\n", usage)
		fs.VisitAll(func(f *flag.Flag) {
			typ, help := flag.UnquoteUsage(f)
			fmt.Fprintf(w, "  --%s %s\n    \t%s", f.Name, typ, strings.ReplaceAll(help, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			fmt.Fprintf(w, " [$%s]\n", envName(name, f.Name))
		})
		fmt.Fprintf(w, "\nConnection, node, logging and --http settings read HELIX_<FLAG>; the flags of this\n"+
			"command alone read only HELIX_%s_<FLAG>, so no other command's environment sets them.\n",
			strings.ToUpper(strings.ReplaceAll(name, "-", "_")))
		if examples != "" {
			fmt.Fprintf(w, "\nExamples:\n%s", examples)
		}
	}
	return fs
}

// parseFlags parses args (flags and positional arguments may be interleaved), then fills
// every flag not given on the command line from its environment variable. It returns
// the positional arguments; ok is false when the command must exit with code.
func parseFlags(e *env, fs *flag.FlagSet, args []string) (pos []string, code int, ok bool) {
	// --help is a request, not an error: usage to stdout, exit 0. (The flag package
	// would print it to the error output.)
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "--h" || a == "-help" || a == "--help" {
			fs.SetOutput(e.stdout)
			fs.Usage()
			return nil, 0, false
		}
	}
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0, false
			}
			return nil, 2, false
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			pos = append(pos, rest[1:]...)
			break
		}
		pos = append(pos, rest[0])
		rest = rest[1:]
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var bad error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || bad != nil {
			return
		}
		if v, found := lookupEnv(e, envName(fs.Name(), f.Name)); found {
			if err := fs.Set(f.Name, v); err != nil {
				bad = fmt.Errorf("invalid $%s %q: %v", envName(fs.Name(), f.Name), v, err)
			}
		}
	})
	if bad != nil {
		fmt.Fprintf(e.stderr, "%s: %v\n", fs.Name(), bad)
		return nil, 2, false
	}
	return pos, 0, true
}

func lookupEnv(e *env, key string) (string, bool) {
	v := e.getenv(key)
	return v, v != ""
}

// badUsage reports a usage error (exit code 2).
func badUsage(e *env, fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(e.stderr, "%s: %s\nRun 'helix %s --help' for usage.\n", fs.Name(), fmt.Sprintf(format, args...), fs.Name())
	return 2
}

// fail reports a failure (exit code 1).
func fail(e *env, cmd string, err error) int {
	fmt.Fprintf(e.stderr, "helix %s: %v\n", cmd, err)
	return 1
}

// logFlags are the logging flags.
type logFlags struct {
	format, level string
}

func (l *logFlags) register(fs *flag.FlagSet, defFormat string) {
	fs.StringVar(&l.format, "log-format", defFormat, "log `format`: json or text")
	fs.StringVar(&l.level, "log-level", "info", "log `level`: debug, info, warn or error")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: must be debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: durationsAsStrings}
	switch l.format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid --log-format %q: must be json or text", l.format)
}

// durationsAsStrings logs a time.Duration as "6s" rather than slog's raw nanoseconds
// (6000000000), which no reader of a log takes for a duration.
func durationsAsStrings(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// nodeFlags are the protocol settings of a node (engine.Config).
type nodeFlags struct {
	id, labels, profile, leaseKey                   string
	capacity, maxInFlight, maxInFlightPerWorker     int
	leaseTTL, renew, retry, heartbeat, deadAfter    time.Duration
	tick, requestTimeout, safetyMargin, stopTimeout time.Duration
	noWork, noCandidate                             bool
	fs                                              *flag.FlagSet
}

func (n *nodeFlags) register(fs *flag.FlagSet, withID bool) {
	n.fs = fs
	if withID {
		host, _ := os.Hostname()
		fs.StringVar(&n.id, "id", host, "node `id`, stable across restarts (1–128 bytes)")
		fs.IntVar(&n.capacity, "capacity", 1, "the node's weight in allocation, ≥ 1")
		fs.StringVar(&n.labels, "labels", "", "node `labels`: key=value,key=value")
		fs.BoolVar(&n.noWork, "no-work", false, "coordinator candidate only: take no partitions")
		fs.BoolVar(&n.noCandidate, "no-candidate", false, "worker only: never compete for the coordinator lease")
	}
	fs.StringVar(&n.profile, "profile", "default", "timing `profile`: default (lease 6s, heartbeat 1s, dead after 5s) or\nfast (lease 2s, heartbeat 300ms, dead after 1.5s: tests, demos); the flags below override it")
	leaseKeyFlag(fs, &n.leaseKey)
	fs.DurationVar(&n.leaseTTL, "lease-ttl", 0, "coordinator lease TTL (store time)")
	fs.DurationVar(&n.renew, "renew", 0, "coordinator renewal interval (default lease-ttl/3)")
	fs.DurationVar(&n.retry, "retry", 0, "how often a standby polls the lease")
	fs.DurationVar(&n.heartbeat, "heartbeat", 0, "worker heartbeat interval")
	fs.DurationVar(&n.deadAfter, "dead-after", 0, "heartbeat age after which a node is declared dead (≥ 3 × heartbeat)")
	fs.DurationVar(&n.tick, "tick", 0, "how often the coordinator reads state and plans")
	fs.DurationVar(&n.requestTimeout, "request-timeout", 0, "bound on every store call (< renew and < heartbeat)")
	fs.DurationVar(&n.safetyMargin, "safety-margin", 0, "subtracted from every conservative deadline")
	fs.DurationVar(&n.stopTimeout, "stop-timeout", 5*time.Second, "how long a partition handler may take to stop")
	fs.IntVar(&n.maxInFlight, "max-in-flight", 0, "partitions releasing at once, cluster-wide (0 = unlimited)")
	fs.IntVar(&n.maxInFlightPerWorker, "max-in-flight-per-worker", 0, "partitions releasing at once from one worker (0 = unlimited)")
}

// config builds the engine config; errors name the flag.
func (n *nodeFlags) config() (engine.Config, error) {
	var c engine.Config
	if err := n.checkGiven(); err != nil {
		return c, err
	}
	switch n.profile {
	case "default", "":
	case "fast":
		c = engine.FastConfig()
	default:
		return c, fmt.Errorf("invalid --profile %q: must be default or fast", n.profile)
	}
	c.NodeID = n.id
	c.Capacity = n.capacity
	c.NoWork = n.noWork
	c.NoCandidate = n.noCandidate
	if n.leaseKey != "" {
		c.LeaseKey = n.leaseKey
	}
	for _, d := range []struct {
		v   time.Duration
		dst *time.Duration
	}{
		{n.leaseTTL, &c.LeaseTTL}, {n.renew, &c.RenewInterval}, {n.retry, &c.RetryPeriod},
		{n.heartbeat, &c.Heartbeat}, {n.deadAfter, &c.DeadAfter}, {n.tick, &c.Tick},
		{n.requestTimeout, &c.RequestTimeout}, {n.safetyMargin, &c.SafetyMargin},
	} {
		if d.v != 0 {
			*d.dst = d.v
		}
	}
	c.MaxInFlight = n.maxInFlight
	c.MaxInFlightPerWorker = n.maxInFlightPerWorker
	if n.labels != "" {
		for _, kv := range strings.Split(n.labels, ",") {
			k, v, found := strings.Cut(kv, "=")
			if !found {
				return c, fmt.Errorf("invalid --labels %q: each label must be key=value", n.labels)
			}
			c.Labels = append(c.Labels, engine.Label{Key: strings.TrimSpace(k), Value: strings.TrimSpace(v)})
		}
		slices.SortStableFunc(c.Labels, func(a, b engine.Label) int { return strings.Compare(a.Key, b.Key) })
	}
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// checkGiven rejects values that the engine would silently replace by its defaults (a
// zero is "unset" to engine.Config): a flag the operator gave must mean what it says.
func (n *nodeFlags) checkGiven() error {
	var bad error
	n.fs.Visit(func(f *flag.Flag) { // command line and environment alike
		if bad != nil {
			return
		}
		switch f.Name {
		case "capacity":
			if n.capacity < 1 {
				bad = fmt.Errorf("invalid --capacity %d: must be ≥ 1", n.capacity)
			}
		case "lease-ttl", "renew", "retry", "heartbeat", "dead-after", "tick", "request-timeout", "safety-margin", "stop-timeout":
			if d := f.Value.(flag.Getter).Get().(time.Duration); d <= 0 {
				bad = fmt.Errorf("invalid --%s %v: must be > 0", f.Name, d)
			}
		case "max-in-flight", "max-in-flight-per-worker":
			if v := f.Value.(flag.Getter).Get().(int); v < 0 {
				bad = fmt.Errorf("invalid --%s %d: must be ≥ 0 (0 = unlimited)", f.Name, v)
			}
		}
	})
	return bad
}

// leaseKeyFlag registers --lease-key (node, dev, drain, status) into p.
func leaseKeyFlag(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "lease-key", "", "the coordinator lease's `key` (default \"coordinator\")")
}
