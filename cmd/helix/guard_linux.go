//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// `helix exec-guard` is the watchdog `helix node --exec` puts between itself and each
// child process. The node cannot be trusted to stop its children in time: SIGSTOP it,
// or let it be starved, and its timers do not fire while the children keep running. The
// guard is a process of its own (its own process group, so a signal to the node's group
// does not freeze it), told by the node over stdin:
//
//	D <ns>   the liveness deadline, as CLOCK_MONOTONIC nanoseconds (one clock for every
//	         process of the host, so the deadline does not drift in transit)
//	S        stop: SIGTERM the child, SIGKILL it after the grace period
//
// and it kills the child's process group itself, on its own clock:
//   - SIGTERM at deadline − term lead − kill margin, SIGKILL at deadline − kill margin,
//     unless a later deadline arrived in time;
//   - SIGKILL at once when stdin closes: the node died (kill -9) and nobody may vouch for
//     the partition any more.
//
// The guard writes the deadline for the child to HELIX_DEADLINE_FILE ("<monotonic ns>
// <unix ns>"), so that a cooperative child can check it before each unit of work (the
// example does), and starts the child only once it knows a deadline.

func init() {
	register(&command{name: "exec-guard", summary: "internal: the per-child watchdog of helix node --exec", run: runGuard})
}

const guardUsage = `helix exec-guard [flags] -- PROGRAM ARGS…

Started by helix node --exec for each child process; not meant to be run by hand.
`

func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("clock_gettime(CLOCK_MONOTONIC): " + err.Error())
	}
	return ts.Nano()
}

func runGuard(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "exec-guard", guardUsage, "")
	grace := fs.Duration("grace", 3*time.Second, "SIGTERM → SIGKILL grace period")
	termLead := fs.Duration("term-lead", time.Second, "SIGTERM this long before the deadline's SIGKILL")
	margin := fs.Duration("kill-margin", 50*time.Millisecond, "SIGKILL this long before the deadline")
	// Everything after "--" is the program, whatever flags it has.
	i := slices.Index(args, "--")
	if i < 0 {
		return badUsage(e, fs, "no program to run (after --)")
	}
	pos, code, ok := parseFlags(e, fs, args[:i])
	if !ok {
		return code
	}
	if len(pos) != 0 || len(args) == i+1 {
		return badUsage(e, fs, "usage: flags, then -- and the program")
	}
	g := &guard{grace: *grace, termLead: *termLead, margin: *margin, log: e.stderr}
	return g.run(args[i+1:])
}

type guard struct {
	grace, termLead, margin time.Duration
	log                     io.Writer

	deadline int64 // CLOCK_MONOTONIC ns
	file     string
	pgid     int
}

func (g *guard) logf(format string, a ...any) {
	fmt.Fprintf(g.log, "helix exec-guard: "+format+"\n", a...)
}

// msg is one line from the node; eof when stdin closed.
type msg struct {
	deadline int64
	stop     bool
	eof      bool
}

func readControl(r io.Reader, out chan<- msg) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "D":
			if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				out <- msg{deadline: v}
			}
		case len(f) == 1 && f[0] == "S":
			out <- msg{stop: true}
		}
	}
	out <- msg{eof: true}
}

func (g *guard) run(argv []string) int {
	// SIGTERM or SIGINT to the guard itself (say, a Ctrl-C in a terminal that reaches
	// the whole foreground group) means stop, like an S line.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	ctl := make(chan msg, 16)
	go readControl(os.Stdin, ctl)

	// Nothing runs without a deadline.
	select {
	case m := <-ctl:
		if m.eof || m.stop || m.deadline == 0 {
			g.logf("no deadline received; not starting %q", argv[0])
			return 1
		}
		g.deadline = m.deadline
	case <-time.After(10 * time.Second):
		g.logf("no deadline received within 10s; not starting %q", argv[0])
		return 1
	}
	if monoNow() >= g.deadline-g.margin.Nanoseconds() {
		g.logf("deadline already passed; not starting %q", argv[0])
		return 1
	}
	dir, err := os.MkdirTemp("", "helix-exec-")
	if err != nil {
		g.logf("%v", err)
		return 1
	}
	defer os.RemoveAll(dir)
	g.file = filepath.Join(dir, "deadline")
	if err := g.writeDeadline(); err != nil {
		g.logf("%v", err)
		return 1
	}

	// The child gets a process group of its own (the guard kills the group, so also
	// what the child starts) and dies with the guard (Pdeathsig is tied to the thread
	// that forks it: keep this goroutine on its thread for the child's life).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "HELIX_DEADLINE_FILE="+g.file, "HELIX_DEADLINE_CLOCK=CLOCK_MONOTONIC",
		fmt.Sprintf("HELIX_DEADLINE_NS=%d", g.deadline))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		g.logf("start %q: %v", argv[0], err)
		return 127
	}
	g.pgid = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	var termAt int64 // when SIGTERM was sent, 0 before
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := monoNow()
		killAt := g.deadline - g.margin.Nanoseconds()
		next := killAt
		if termAt == 0 {
			next = min(next, killAt-g.termLead.Nanoseconds())
		} else {
			killAt = min(killAt, termAt+g.grace.Nanoseconds())
			next = killAt
		}
		switch {
		case now >= killAt:
			g.kill(syscall.SIGKILL, "deadline or grace period reached")
			return exitCode(<-exited)
		case termAt == 0 && now >= next:
			g.kill(syscall.SIGTERM, "liveness deadline close")
			termAt = now
			continue
		}
		timer.Reset(time.Duration(next - now))
		select {
		case err := <-exited:
			// The child is gone; clean up anything it left in its group.
			_ = syscall.Kill(-g.pgid, syscall.SIGKILL)
			return exitCode(err)
		case m := <-ctl:
			switch {
			case m.eof:
				g.kill(syscall.SIGKILL, "the node is gone")
				return exitCode(<-exited)
			case m.stop:
				if termAt == 0 {
					g.kill(syscall.SIGTERM, "stop")
					termAt = monoNow()
				}
			case m.deadline > g.deadline:
				g.deadline = m.deadline
				if err := g.writeDeadline(); err != nil {
					g.logf("%v", err)
				}
			}
		case <-sigs:
			if termAt == 0 {
				g.kill(syscall.SIGTERM, "signalled")
				termAt = monoNow()
			}
		case <-timer.C:
		}
	}
}

func (g *guard) kill(sig syscall.Signal, why string) {
	if err := syscall.Kill(-g.pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		g.logf("kill %d with %v: %v", -g.pgid, sig, err)
	}
	if sig == syscall.SIGKILL {
		g.logf("child killed: %s", why)
	} else {
		g.logf("child sent %v: %s", sig, why)
	}
}

// writeDeadline publishes the deadline to the child, atomically (write, then rename).
func (g *guard) writeDeadline() error {
	wall := time.Now().UnixNano() + (g.deadline - monoNow())
	tmp := g.file + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", g.deadline, wall), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, g.file)
}

// exitCode is the child's exit code, 128+signal if it was killed.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if err != nil {
		return 1
	}
	return 0
}
