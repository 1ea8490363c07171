#!/usr/bin/env python3
"""Host side of the guest lock checks: holds flock on DIR/flock.lck and an fcntl write lock on
[0,100) of DIR/posix.lck, writes DIR/holder.ready, and releases both one second after the guest
creates DIR/release-please (or after 600 s)."""
import fcntl, os, sys, time

d = sys.argv[1]
f = open(os.path.join(d, "flock.lck"), "a+")
p = open(os.path.join(d, "posix.lck"), "a+")
fcntl.flock(f, fcntl.LOCK_EX)
fcntl.lockf(p, fcntl.LOCK_EX, 100, 0)
open(os.path.join(d, "holder.ready"), "w").close()
print("ready", flush=True)
deadline = time.time() + 600
while time.time() < deadline and not os.path.exists(os.path.join(d, "release-please")):
    time.sleep(0.1)
time.sleep(1)
fcntl.lockf(p, fcntl.LOCK_UN, 100, 0)
fcntl.flock(f, fcntl.LOCK_UN)
print("released", flush=True)
time.sleep(600)
