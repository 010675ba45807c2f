package main

import (
	"flag"
	"time"
)

// execFlags are `helix node --exec` and its grace period. The handler they make is
// per platform: exec_linux.go, and exec_other.go, which refuses --exec (its guard relies
// on CLOCK_MONOTONIC shared between processes, process groups and Pdeathsig).
type execFlags struct {
	command string
	grace   time.Duration
}

func (f *execFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.command, "exec", "", "run `COMMAND` (with /bin/sh -c) once per owned partition instead of the demo handler (Linux only);\n"+
		"its environment has HELIX_DOMAIN, HELIX_TASKLIST, HELIX_PARTITION, HELIX_GENERATION, HELIX_NODE_ID and\n"+
		"HELIX_DEADLINE_FILE (the liveness deadline: check it before each unit of work). See examples/exec.")
	fs.DurationVar(&f.grace, "exec-grace", 3*time.Second, "on revoke, drain or shutdown: SIGTERM, then SIGKILL after this long (< --stop-timeout)")
}
