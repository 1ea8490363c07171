#!/usr/bin/env python3
"""Sends one command to a QEMU human monitor on a unix socket and prints its answer.
Usage: monitor.py SOCKET COMMAND"""
import socket, sys, time

s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
time.sleep(0.3)
s.recv(65536)
s.sendall(sys.argv[2].encode() + b"\n")
time.sleep(0.5)
try:
    s.settimeout(1)
    print(s.recv(65536).decode(errors="replace"))
except OSError:
    pass
