package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/helixcoord/helix"
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
