"""Runs children through subprocess, which spawns them with vfork (or posix_spawn), until
STOPFILE exists. Each child exits with a status its number decides, which is checked.

Usage: subprocs.py STOPFILE. Prints "ready", then "children=N bad=0" and exits 0 (1 if a
child's status was wrong)."""

import os
import subprocess
import sys

stop = sys.argv[1]
print("ready", flush=True)
n = bad = 0
while not os.path.exists(stop):
    code = n % 50
    done = subprocess.run(["/bin/sh", "-c", f"exit {code}"])
    if done.returncode != code:
        print(f"child {n}: status {done.returncode}", file=sys.stderr, flush=True)
        bad += 1
    n += 1
print(f"children={n} bad={bad}", flush=True)
sys.exit(1 if bad else 0)
