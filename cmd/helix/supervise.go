package main

import (
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
)

// printGivenBack lists the recent give-backs of `helix status`: partitions whose
// handler kept failing on a node. One that stays unowned fails everywhere: the
// coordinator holds it until a cool-down ends.
func printGivenBack(w io.Writer, gb []helix.GivenBackSummary) {
	if len(gb) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "GIVEN BACK (last %v)\tBY\tAGO\tOWNER NOW\tGENERATION\n", helix.GivenBackRecent)
	for _, g := range gb {
		owner := g.Owner
		if owner == "" {
			owner = "unowned (failing?)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%d\n", g.Partition, g.By, g.Age.Round(time.Second), owner, g.Generation)
	}
	tw.Flush()
}

// supFlags are the supervision settings of a node (engine.Config's Restart* and
// GiveBack* fields). Zero keeps the profile's value.
type supFlags struct {
	restartBase, restartMax, window, coolDown time.Duration
	jitter                                    float64
	linear                                    bool
	giveBackAfter                             int
}

func (s *supFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&s.restartBase, "restart-base", 0, "first restart delay of a failed partition handler (default 1s; fast 100ms)")
	fs.DurationVar(&s.restartMax, "restart-max", 0, "longest restart delay (default 30s; fast 2s)")
	fs.Float64Var(&s.jitter, "restart-jitter", 0, "random fraction of each restart delay, in [0, 1) (default 0.2)")
	fs.BoolVar(&s.linear, "restart-linear", false, "grow restart delays linearly (base·k) instead of exponentially (base·2^(k−1))")
	fs.IntVar(&s.giveBackAfter, "give-back-after", engine.DefaultConfig().GiveBackAfter, "give a partition back after this many handler failures within --give-back-window (0 = never)")
	fs.DurationVar(&s.window, "give-back-window", 0, "window in which handler failures are counted (default 2m; fast 20s)")
	fs.DurationVar(&s.coolDown, "give-back-cool-down", 0, "how long the coordinator keeps a partition off a node that gave it back (default 5m; fast 30s)")
}

// apply sets the flags into c and validates it again; errors name the config field.
func (s *supFlags) apply(c *engine.Config) error {
	for _, d := range []struct {
		v   time.Duration
		dst *time.Duration
	}{{s.restartBase, &c.RestartBase}, {s.restartMax, &c.RestartMax}, {s.window, &c.GiveBackWindow}, {s.coolDown, &c.GiveBackCoolDown}} {
		if d.v != 0 {
			*d.dst = d.v
		}
	}
	if s.jitter != 0 {
		c.RestartJitter = s.jitter
	}
	c.RestartLinear = s.linear
	switch {
	case s.giveBackAfter == 0:
		c.GiveBackAfter = engine.NeverGiveBack
	case s.giveBackAfter < 0:
		return fmt.Errorf("invalid --give-back-after %d: must be ≥ 0 (0 = never)", s.giveBackAfter)
	default:
		c.GiveBackAfter = s.giveBackAfter
	}
	if c.RestartMax < c.RestartBase && s.restartMax == 0 {
		c.RestartMax = c.RestartBase // only the base was raised: the cap follows it
	}
	return c.Validate()
}
