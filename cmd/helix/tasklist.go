package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/helixcoord/helix/engine"
)

func init() {
	register(&command{name: "tasklist", summary: "create, resize, delete or list task lists (put|delete|list)", run: runTaskList})
}

const taskListExamples = `  # Create (or resize) task list "emails" of domain "default" with 64 partitions:
  helix tasklist put emails 64

  # In another domain:
  helix tasklist put --domain billing invoices 16

  # Delete it (its partitions are released by the coordinator):
  helix tasklist delete --domain billing invoices

  # List every task list, as a table or JSON:
  helix tasklist list
  helix tasklist list --json
`

func runTaskList(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "tasklist", "helix tasklist put [--domain D] NAME PARTITIONS\n       helix tasklist delete [--domain D] NAME\n       helix tasklist list [--json]", taskListExamples)
	var sf storeFlags
	sf.register(fs)
	domain := fs.String("domain", "default", "the task list's `domain`")
	asJSON := fs.Bool("json", false, "list: print JSON")
	pos, code, ok := parseFlags(e, fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return badUsage(e, fs, "missing subcommand: put, delete or list")
	}
	sub, pos := pos[0], pos[1:]
	var tl engine.TaskList
	switch sub {
	case "put":
		if len(pos) != 2 {
			return badUsage(e, fs, "put takes NAME PARTITIONS, got %q", pos)
		}
		n, err := strconv.Atoi(pos[1])
		if err != nil {
			return badUsage(e, fs, "invalid PARTITIONS %q: must be an integer 1–%d", pos[1], engine.MaxPartitions)
		}
		tl = engine.TaskList{Domain: *domain, Name: pos[0], Partitions: n}
		if err := engine.ValidateTaskList(tl); err != nil {
			return badUsage(e, fs, "%v", err)
		}
	case "delete":
		if len(pos) != 1 {
			return badUsage(e, fs, "delete takes NAME, got %q", pos)
		}
	case "list":
		if len(pos) != 0 {
			return badUsage(e, fs, "list takes no arguments, got %q", pos)
		}
	default:
		return badUsage(e, fs, "unknown subcommand %q: must be put, delete or list", sub)
	}
	store, err := sf.open(ctx, e)
	if err != nil {
		return fail(e, "tasklist", err)
	}
	defer store.Close()
	switch sub {
	case "put":
		if _, err := store.PutTaskList(ctx, tl); err != nil {
			return fail(e, "tasklist", err)
		}
		fmt.Fprintf(e.stdout, "task list %s/%s: %d partitions\n", tl.Domain, tl.Name, tl.Partitions)
	case "delete":
		if _, err := store.DeleteTaskList(ctx, *domain, pos[0]); err != nil {
			return fail(e, "tasklist", err)
		}
		fmt.Fprintf(e.stdout, "task list %s/%s deleted\n", *domain, pos[0])
	case "list":
		r, err := store.ListTaskLists(ctx)
		if err != nil {
			return fail(e, "tasklist", err)
		}
		if *asJSON {
			type row struct {
				Domain     string `json:"domain"`
				Name       string `json:"name"`
				Partitions int    `json:"partitions"`
			}
			rows := []row{}
			for _, t := range r.TaskLists {
				rows = append(rows, row{t.Domain, t.Name, t.Partitions})
			}
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(rows)
			return 0
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DOMAIN\tNAME\tPARTITIONS")
		for _, t := range r.TaskLists {
			fmt.Fprintf(tw, "%s\t%s\t%d\n", t.Domain, t.Name, t.Partitions)
		}
		tw.Flush()
	}
	return 0
}
