#!/usr/bin/env python3
"""Backend CPU at each workload boundary of a guest benchmark (vmbench.sh).

Usage: markcpu.py PID OUTPUT_FILE

Follows OUTPUT_FILE (the guest's streamed stdout) and, each time a line "MARK name" appears,
prints "name SECONDS", SECONDS being the user+system CPU so far of process PID and its live
descendants (/proc/PID/stat, dead threads included). The difference between two marks is the backend's CPU for the
workload between them. Runs until killed or until PID exits."""
import os
import sys
import time

pid, path = sys.argv[1], sys.argv[2]
ticks = os.sysconf("SC_CLK_TCK")


def tree(root):
    """root and its live descendants (virtiofsd runs its server in a forked child)."""
    found, todo = [], [root]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in os.listdir(f"/proc/{p}/task") if os.path.isdir(f"/proc/{p}/task") else []:
            try:
                todo += open(f"/proc/{p}/task/{task}/children").read().split()
            except OSError:
                pass
    return found


def cpu_seconds():
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])   # utime, stime (fields 14, 15)
        except OSError:
            pass
    return total / ticks


with open(path, errors="replace") as out:
    pending = ""
    while os.path.exists(f"/proc/{pid}"):
        chunk = out.read()
        if not chunk:
            time.sleep(0.02)
            continue
        pending += chunk
        *lines, pending = pending.split("\n")
        for line in lines:
            line = line.strip("\r")
            if line.startswith("MARK "):
                print(line.split()[1], f"{cpu_seconds():.2f}", flush=True)
