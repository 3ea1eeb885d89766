"""alarm: says "ready", waits until GOFILE exists (so that the timers are set wherever the
process then runs), then sets signal.alarm(1) and computes until its handler ran, then a
0.3 s ITIMER_REAL, printing "alarm fired" and "itimer fired". usage: alarm.py GOFILE"""
import os
import signal
import sys
import time

fired = []
signal.signal(signal.SIGALRM, lambda sig, frame: fired.append(sig))
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)


def spin_until(count):
    start = time.monotonic()
    while len(fired) < count:
        if time.monotonic() - start > 20:
            print("FAIL: no timer signal", flush=True)
            sys.exit(1)


signal.alarm(1)
spin_until(1)
print("alarm fired", flush=True)
signal.setitimer(signal.ITIMER_REAL, 0.3)
spin_until(2)
print("itimer fired", flush=True)
