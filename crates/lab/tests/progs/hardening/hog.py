"""hog: one user holding as many control connections as it can. WORKERS processes each open
up to COUNT connections to SOCKET and register each as a supervisor, so that no idle timeout
ends them; the hog says how many it opened and holds them all until it is killed.
usage: hog.py SOCKET WORKERS COUNT"""
import os
import resource
import socket
import sys
import time

path, workers, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def connect():
    """A connection to the daemon, or None once its backlog has stayed full for 2 s (a
    daemon out of descriptors accepts nothing more) or we are out of descriptors."""
    deadline = time.monotonic() + 2
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
        except OSError:
            return None
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                return None
            time.sleep(0.001)
            continue
        except OSError:
            s.close()
            return None
        s.setblocking(True)
        return s


read_end, write_end = os.pipe()
for _ in range(workers):
    if os.fork() == 0:
        os.close(read_end)
        held = []
        for _ in range(count):
            s = connect()
            if s is None:
                break
            try:
                s.sendall(b'{"supervise":{"advice":{"locked":false,"decay":"normal","memory_need_mb":0}}}\n')
            except OSError:
                pass
            held.append(s)
        os.write(write_end, b"%d\n" % len(held))
        os.close(write_end)
        # Killed, the parent leaves us to the node's init: then let go.
        while os.getppid() != 1:
            time.sleep(0.1)
        os._exit(0)
os.close(write_end)
with os.fdopen(read_end) as reports:
    total = sum(int(reports.readline()) for _ in range(workers))
print("holding", total, flush=True)
while True:
    time.sleep(3600)
