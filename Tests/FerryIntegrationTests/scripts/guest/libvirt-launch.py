#!/usr/bin/env python3
"""Starts a virtiofsd-compatible back-end the way libvirt 9 does (qemuVirtioFSStart /
qemuVirtioFSBuildCommandLine): a unix socket libvirt binds and listens on, passed as a
non-blocking descriptor, and the argument list
  --fd=N -o source=DIR,cache=MODE,xattr,flock,posix_lock --thread-pool-size=16
with commas in DIR doubled. Usage: libvirt-launch.py BINARY SOCKET DIR CACHE"""
import os, socket, sys

binary, path, source, cache = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(1)
s.setblocking(False)            # virCommandNonblockingFDs
fd = s.fileno()
os.set_inheritable(fd, True)
opts = "source=" + source.replace(",", ",,") + ",cache=" + cache + ",xattr,flock,posix_lock"
os.execv(binary, [binary, "--fd=%d" % fd, "-o", opts, "--thread-pool-size=16"])
