"""fork at the remote: after the move (the line on stdin says it is done) the program forks;
the child prints and exits 0, the parent waits, prints the child's status, computes again
(the test moves it once more) and exits 0."""
import os
import sys


def crunch(seed):
    x, acc = seed, 0
    for i in range(600_000):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        acc = (acc + (x >> 33)) % 1000000007
    return acc


def gate():
    if sys.stdin.readline() != "\n":
        print("FAIL: gate", flush=True)
        sys.exit(1)


print("computing 1", flush=True)
print(f"round 1: {crunch(1)}", flush=True)
gate()
pid = os.fork()
if pid == 0:
    print("child: hello", flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
print(f"parent: child exited with {os.waitstatus_to_exitcode(status)}", flush=True)
print("computing 2", flush=True)
print(f"round 2: {crunch(2)}", flush=True)
gate()
print("done", flush=True)
