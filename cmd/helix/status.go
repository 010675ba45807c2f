package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/helixcoord/helix"
)

func init() {
	register(&command{name: "status", summary: "show the coordinator, nodes, partitions and handoffs", run: runStatus})
}

const statusExamples = `  # The cluster at a glance:
  helix status

  # As JSON (for scripts: jq '.coordinator.owner'):
  helix status --json
`

func runStatus(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "status", "helix status [--json]", statusExamples)
	var sf storeFlags
	sf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var leaseKey string
	leaseKeyFlag(fs, &leaseKey)
	pos, code, ok := parseFlags(e, fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return badUsage(e, fs, "unexpected arguments %q", pos)
	}
	store, err := sf.open(ctx, e)
	if err != nil {
		return fail(e, "status", err)
	}
	defer store.Close()
	cs, err := helix.ReadClusterStatus(ctx, store, leaseKey)
	if err != nil {
		return fail(e, "status", err)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(cs)
		return 0
	}
	printStatus(e.stdout, cs)
	return 0
}

func printStatus(w io.Writer, cs helix.ClusterStatus) {
	c := cs.Coordinator
	if c.Held {
		fmt.Fprintf(w, "coordinator: %s (epoch %d, lease expires in %v at %s)\n", c.Owner, c.Epoch,
			c.ExpiresIn.Round(time.Millisecond), c.ExpiresAt.UTC().Format(time.RFC3339Nano))
	} else {
		fmt.Fprintf(w, "coordinator: none (last epoch %d)\n", c.Epoch)
	}
	fmt.Fprintf(w, "partitions:  %d configured, %d owned by live nodes, %d handoffs in flight\n\n", cs.Partitions, cs.Owned, len(cs.Handoffs))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tINCARNATION\tHEARTBEAT AGE\tPARTITIONS\tPER TASK LIST\tPROCESS")
	for _, n := range cs.Nodes {
		keys := make([]string, 0, len(n.Partitions))
		for k := range n.Partitions {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var per []string
		for _, k := range keys {
			per = append(per, fmt.Sprintf("%s=%d", k, n.Partitions[k]))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%d\t%s\t%s\n", n.ID, n.State, n.Incarnation, n.HeartbeatAge.Round(time.Millisecond), n.Total, strings.Join(per, " "), processOf(n))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK LIST\tPARTITIONS\tOWNED\tRELEASING\tUNOWNED")
	for _, t := range cs.TaskLists {
		fmt.Fprintf(tw, "%s/%s\t%d\t%d\t%d\t%d\n", t.Domain, t.Name, t.Partitions, t.Owned, t.Releasing, t.Unowned)
	}
	tw.Flush()
	if len(cs.Handoffs) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HANDOFF\tFROM\tTO\tGENERATION")
		for _, h := range cs.Handoffs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", h.Partition, h.From, h.To, h.Generation)
		}
		tw.Flush()
	}
	printGivenBack(w, cs.GivenBack)
}

// processOf says where a node's registered process runs ("host pid 123"), or "-".
func processOf(n helix.NodeSummary) string {
	switch {
	case n.Host != "" && n.PID > 0:
		return fmt.Sprintf("%s pid %d", n.Host, n.PID)
	case n.Host != "":
		return n.Host
	}
	return "-"
}
