"""fake_guest: an ordinary user who wants her own process listed as hosted from node HOME
(a balancer would believe it). Three tries, each printed as one line:

  "reply: ..."   she connects to mosixd's socket and registers as a guest herself;
  "records: ..." she writes a record for her own process beside the socket;
  "guest: ..."   she runs `mosixd guest` herself, on a socket pair and made-up keys, and
                 prints what it logged about its registration (it ends once she closes its
                 session).

usage: fake_guest.py SOCKET HOME"""
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time

path, home = sys.argv[1], int(sys.argv[2])

# 1. Register on a connection of her own.
sock = socket.socket(socket.AF_UNIX)
sock.connect(path)
sock.sendall(json.dumps({"guest": {"home_node": home}}).encode() + b"\n")
reply = b""
while not reply.endswith(b"\n"):
    chunk = sock.recv(65536)
    if not chunk:
        break
    reply += chunk
print("reply:", reply.decode().strip(), flush=True)
sock.close()

# 2. Record her own process as a guest the daemon started.
records = os.path.splitext(path)[0] + ".guests"
with open("/proc/self/stat") as f:
    start = f.read().rsplit(")", 1)[1].split()[19]
name = f"{records}/{os.getpid()}-{start}-{os.getuid()}-{home}"
try:
    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    print("records: written", name, flush=True)
except OSError as e:
    print("records:", type(e).__name__, flush=True)

# 3. Run a guest of her own: session on fd 3, 64 bytes of keys on fd 4.
ours, theirs = socket.socketpair()
keys_read, keys_write = os.pipe()
os.write(keys_write, bytes(64))
os.close(keys_write)
# Above 4, so that placing one on 3 or 4 cannot overwrite the other.
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (theirs.fileno(), keys_read)]


def place():
    os.dup2(high[0], 3)
    os.dup2(high[1], 4)


guest = subprocess.Popen(
    [shutil.which("mosixd"), "guest", "--report-to", path, "--home", str(home)],
    preexec_fn=place,
    pass_fds=(3, 4),
    stdin=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    env=dict(os.environ, RUST_LOG="info", NO_COLOR="1"),
)
theirs.close()
os.close(keys_read)
for fd in high:
    os.close(fd)
# Its first registration is answered at once; give it 30 s before calling it silent.
os.set_blocking(guest.stderr.fileno(), False)
said = b""
deadline = time.monotonic() + 30
while b"registration" not in said and time.monotonic() < deadline:
    chunk = guest.stderr.read()
    if chunk:
        said += chunk
    else:
        time.sleep(0.01)
line = next((l for l in said.decode().splitlines() if "registration" in l), "nothing")
print("guest:", line, flush=True)
ours.close()
guest.wait()
