"""execve at the remote: after the move (the line on stdin says it is done) the program
execs a shell, which prints, waits for one more line (the test asks where it runs) and
exits with status 5."""
import os
import sys

x, acc = 7, 0
print("computing 1", flush=True)
for i in range(600_000):
    x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
    acc = (acc + (x >> 33)) % 1000000007
print(f"result {acc}", flush=True)
if sys.stdin.readline() != "\n":
    sys.exit(1)
os.execv("/bin/sh", ["sh", "-c", "echo exec-ok; read line; echo \"sh read '$line'\"; exit 5"])
