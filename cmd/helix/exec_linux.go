//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
)

// handler returns the --exec handler, or nil without --exec.
func (f *execFlags) handler(cfg engine.Config, stopTimeout time.Duration, log *slog.Logger) (helix.Handler, error) {
	if f.command == "" {
		return nil, nil
	}
	if f.grace <= 0 || f.grace >= stopTimeout {
		return nil, fmt.Errorf("invalid --exec-grace %v: must be > 0 and shorter than --stop-timeout (%v)", f.grace, stopTimeout)
	}
	if cfg.NoWork {
		return nil, errors.New("--exec needs a worker: it cannot be combined with --no-work (helix coordinator)")
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("--exec: finding the helix binary for its guard: %w", err)
	}
	return &execHandler{
		self: self, command: f.command, node: cfg.NodeID, grace: f.grace,
		// SIGTERM ahead of the deadline's SIGKILL: at most a heartbeat, so that a node
		// that is merely one heartbeat late does not stop its children.
		termLead: min(f.grace, cfg.Heartbeat),
		poll:     min(cfg.Heartbeat/4, 50*time.Millisecond),
		log:      log,
	}, nil
}

// execHandler runs one child per partition through `helix exec-guard` (guard_linux.go).
// The guard enforces the liveness deadline on its own clock; this side forwards the
// deadline as it moves, asks for a stop when the partition is stopped, turns the
// child's output into log lines, and reports a child that exits on its own as a
// handler failure, so that supervision restarts it.
type execHandler struct {
	self, command, node string
	grace, termLead     time.Duration
	poll                time.Duration
	log                 *slog.Logger
}

func (h *execHandler) Process(ctx context.Context, p helix.Partition) error {
	log := h.log.With("partition", p.ID.String(), "generation", p.Generation)
	cmd := exec.Command(h.self, "exec-guard", "--grace", h.grace.String(), "--term-lead", h.termLead.String(),
		"--", "/bin/sh", "-c", h.command)
	cmd.Env = append(childEnv(),
		"HELIX_DOMAIN="+p.ID.Domain, "HELIX_TASKLIST="+p.ID.TaskList,
		"HELIX_PARTITION="+strconv.Itoa(p.ID.Partition), "HELIX_GENERATION="+strconv.FormatUint(p.Generation, 10),
		"HELIX_NODE_ID="+h.node)
	// The guard leads a process group of its own: a signal to the node's group (a
	// terminal's SIGSTOP, say) does not reach it, and the last resort below kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	ctl, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return errors.New("exec: the partition has no liveness deadline")
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec: starting the guard: %w", err)
	}
	var out sync.WaitGroup
	out.Add(2)
	go h.lines(&out, stdout, log, "stdout")
	go h.lines(&out, stderr, log, "stderr")
	exited := make(chan error, 1)
	go func() {
		out.Wait() // the pipes must be drained before Wait closes them
		exited <- cmd.Wait()
	}()
	log.Info("child started", "event", "child_start", "guard_pid", cmd.Process.Pid, "command", h.command)

	send := func(line string) {
		if _, err := io.WriteString(ctl, line); err != nil {
			log.Debug("guard control write", "err", err)
		}
	}
	sent := dl
	send(fmt.Sprintf("D %d\n", monoDeadline(dl)))
	tick := time.NewTicker(h.poll)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			ctl.Close()
			log.Warn("child exited on its own", "event", "child_exit", "err", errString(err))
			return fmt.Errorf("child exited: %s", errString(err))
		case <-tick.C:
			if d, ok := ctx.Deadline(); ok && d.After(sent) {
				sent = d
				send(fmt.Sprintf("D %d\n", monoDeadline(d)))
			}
		case <-ctx.Done():
			send("S\n")
			err := h.awaitStop(cmd, exited)
			ctl.Close()
			log.Info("child stopped", "event", "child_stop", "reason", helix.StopReason(ctx).String(), "exit", errString(err))
			return nil
		}
	}
}

// awaitStop waits for the guard to stop the child (grace period plus a little); past
// that it kills the guard's group, and the child follows it (Pdeathsig).
func (h *execHandler) awaitStop(cmd *exec.Cmd, exited <-chan error) error {
	t := time.NewTimer(h.grace + time.Second)
	defer t.Stop()
	select {
	case err := <-exited:
		return err
	case <-t.C:
		h.log.Error("exec guard did not stop its child within the grace period; killing it", "guard_pid", cmd.Process.Pid)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return <-exited
	}
}

// lines logs each line of a child's stream, labelled with the partition.
func (h *execHandler) lines(wg *sync.WaitGroup, r io.Reader, log *slog.Logger, stream string) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		log.Info(sc.Text(), "stream", stream)
	}
}

// monoDeadline converts a deadline on this process's clock to CLOCK_MONOTONIC
// nanoseconds, the clock the guard and the child share with it.
func monoDeadline(d time.Time) int64 {
	return monoNow() + time.Until(d).Nanoseconds()
}

func errString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// childEnv is the node's environment without its HELIX_* variables: the DSN (or its
// file) and the node's own settings are not the child's business.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HELIX_") {
			env = append(env, kv)
		}
	}
	return env
}
