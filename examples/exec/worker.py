#!/usr/bin/env python3
"""A partition worker for `helix node --exec`, in plain Python (no helix library).

helix starts one copy per partition the node owns, with the partition in the
environment (HELIX_DOMAIN, HELIX_TASKLIST, HELIX_PARTITION, HELIX_GENERATION,
HELIX_NODE_ID) and the node's liveness deadline in the file HELIX_DEADLINE_FILE:
"<CLOCK_MONOTONIC ns> <unix ns>", rewritten each time a heartbeat moves it on.

The rules a worker follows:
  * Before each unit of work, check that the unit ends before the deadline (alive()
    below). Past the deadline another node may own the partition. helix's guard kills
    the worker just before the deadline anyway; checking first means a unit is never
    cut in half.
  * Pass HELIX_GENERATION along with every write to your own systems and have them
    refuse a lower one: it fences a previous owner.
  * On SIGTERM (the partition moved, the node drains or shuts down), finish or abandon
    the current unit and exit promptly: SIGKILL follows after --exec-grace.
  * Exiting on your own is a failure: helix restarts the worker with backoff, and gives
    the partition back after repeated failures.

    helix node --exec 'python3 examples/exec/worker.py --unit 0.05 --log /tmp/units.log'

With --log, each unit appends "begin" and "end" lines with CLOCK_MONOTONIC stamps (one
clock for every process of the host), which the end-to-end test reads to prove that no
two workers ever processed one partition at once. --fail-on NODE makes the worker exit
with an error on that node (to watch supervision restart it and give the partition back).
--rogue makes the workers of odd partitions ignore the deadline and SIGTERM: only helix's
guard stops them (the test uses it to show the guard alone keeps them in bounds).
"""
import argparse
import os
import signal
import sys
import time

stopping = False


def on_term(signum, frame):
    global stopping
    stopping = True


def deadline_ns(path):
    """The liveness deadline (CLOCK_MONOTONIC ns); 0 if it cannot be read."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def alive(path, unit_ns):
    """Wait until a unit of unit_ns fits before the deadline; False once stopping."""
    while not stopping:
        if time.monotonic_ns() + unit_ns < deadline_ns(path):
            return True
        time.sleep(0.01)  # a heartbeat may move the deadline on; the guard ends us if not
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--unit", type=float, default=0.1, help="seconds per unit of work")
    ap.add_argument("--log", help="append begin/end lines of every unit here")
    ap.add_argument("--fail-on", default="", help="exit 1 at once on this node id")
    ap.add_argument("--rogue", action="store_true", help="odd partitions ignore the deadline and SIGTERM")
    args = ap.parse_args()
    rogue = args.rogue and int(os.environ["HELIX_PARTITION"]) % 2 == 1
    signal.signal(signal.SIGTERM, signal.SIG_IGN if rogue else on_term)

    part = "%s/%s/%s" % (os.environ["HELIX_DOMAIN"], os.environ["HELIX_TASKLIST"], os.environ["HELIX_PARTITION"])
    gen = os.environ["HELIX_GENERATION"]
    node = os.environ.get("HELIX_NODE_ID", "")
    path = os.environ["HELIX_DEADLINE_FILE"]
    if args.fail_on and node == args.fail_on:
        print("failing on purpose on %s" % node, file=sys.stderr, flush=True)
        sys.exit(1)
    print("worker for %s generation %s on %s started" % (part, gen, node), flush=True)

    log = open(args.log, "a", buffering=1) if args.log else None
    unit_ns = int(args.unit * 1e9)
    units = 0
    while rogue or alive(path, unit_ns):
        begin = time.monotonic_ns()
        if log:
            log.write("begin %s %s %d %d %d\n" % (part, gen, os.getpid(), begin, unit_ns))
        time.sleep(args.unit)  # the unit of work, passing `gen` with its writes
        units += 1
        if log:
            log.write("end %s %s %d %d\n" % (part, gen, os.getpid(), time.monotonic_ns()))
    print("worker for %s generation %s stopping after %d units" % (part, gen, units), flush=True)


if __name__ == "__main__":
    main()
