#!/usr/bin/env python3
"""Creates COUNT files under MOUNT (100 directories), then stats every one while holding
them all in the kernel's inode cache, then lists them. Exit 0 only if every step succeeded."""
import os, sys

mount, count = sys.argv[1], int(sys.argv[2])
dirs = 100
for d in range(dirs):
    os.mkdir(os.path.join(mount, f"d{d:03d}"))
for i in range(count):
    fd = os.open(os.path.join(mount, f"d{i % dirs:03d}", f"f{i:06d}"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"x")
    os.close(fd)
print("created", count, flush=True)
seen = 0
for i in range(count):
    st = os.stat(os.path.join(mount, f"d{i % dirs:03d}", f"f{i:06d}"))
    assert st.st_size == 1, st
    seen += 1
print("stat", seen, flush=True)
listed = sum(len(os.listdir(os.path.join(mount, f"d{d:03d}"))) for d in range(dirs))
print("listed", listed, flush=True)
sys.exit(0 if listed == count == seen else 1)
