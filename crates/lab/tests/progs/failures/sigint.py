"""sigint: a SIGINT handler that prints "got INT" and lets the program go on. Says "ready",
ticks every 0.1 s of busy computing; five ticks after the first SIGINT it prints "done" and
exits 0 (after 600 ticks without one: "FAIL: no SIGINT", exit 1)."""
import signal
import sys
import time

got = []


def on_int(sig, frame):
    got.append(sig)
    print("got INT", flush=True)


signal.signal(signal.SIGINT, on_int)
print("ready", flush=True)
left = None
for i in range(600):
    start = time.monotonic()
    while time.monotonic() - start < 0.1:
        pass
    print("tick", i, flush=True)
    if got and left is None:
        left = 5
    if left is not None:
        left -= 1
        if left == 0:
            print("done", flush=True)
            sys.exit(0)
print("FAIL: no SIGINT", flush=True)
sys.exit(1)
