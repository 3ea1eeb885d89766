"""ticks: says "ready", then prints "tick I" after every 0.1 s of busy computing until GOFILE
exists; then prints "done" and exits with STATUS (0 if not given). Gives up after 3000 ticks
("FAIL: no GOFILE", exit 1), so a broken test cannot leave it running for long.
usage: ticks.py GOFILE [STATUS]"""
import os
import sys
import time

go = sys.argv[1]
status = int(sys.argv[2]) if len(sys.argv) > 2 else 0
print("ready", flush=True)
for i in range(3000):
    start = time.monotonic()
    while time.monotonic() - start < 0.1:
        pass
    print("tick", i, flush=True)
    if os.path.exists(go):
        print("done", flush=True)
        sys.exit(status)
print("FAIL: no GOFILE", flush=True)
sys.exit(1)
