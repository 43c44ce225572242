#!/usr/bin/env python3
"""Times commands in interleaved rounds and prints medians and ratios.

    python3 tools/bench-interleaved.py [--rounds 30] [--warmup 2] NAME=CMD NAME=CMD ...

Each round runs every command once, in a rotated order, so that load from
other jobs on a shared machine falls on all of them alike. Reports the median
wall time and median CPU time (user+sys of the child) of each, and each
median's ratio to the first command's (>1: faster than the first). Prints the
CPU model first.
"""
import argparse
import os
import resource
import shlex
import statistics
import subprocess
import time


def run(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("commands", nargs="+")
    args = ap.parse_args()
    cmds = [c.split("=", 1) for c in args.commands]
    model = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
        "?",
    )
    print(f"CPU: {model}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    for _ in range(args.warmup):
        for _, c in cmds:
            run(c)
    times = {n: ([], []) for n, _ in cmds}
    for r in range(args.rounds):
        k = r % len(cmds)
        for n, c in cmds[k:] + cmds[:k]:
            w, u = run(c)
            times[n][0].append(w)
            times[n][1].append(u)
    base = cmds[0][0]
    bw = statistics.median(times[base][0])
    bc = statistics.median(times[base][1])
    print(f"{'command':<24} {'median wall ms':>15} {'median cpu ms':>14} {'wall ratio':>11} {'cpu ratio':>10}")
    for n, _ in cmds:
        w = statistics.median(times[n][0])
        u = statistics.median(times[n][1])
        print(f"{n:<24} {w * 1e3:>15.1f} {u * 1e3:>14.1f} {bw / w:>11.2f} {bc / u:>10.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}; {args.rounds} rounds")


if __name__ == "__main__":
    main()
