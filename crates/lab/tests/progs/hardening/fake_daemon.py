"""fake_daemon: an ordinary user's program listening where tools look for mosixd. It writes
"got N bytes" for every connection, once the client has closed it, and answers nothing.
usage: fake_daemon.py SOCKET"""
import os
import socket
import sys

s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
# Open to every user, as the daemon's own socket is.
os.chmod(sys.argv[1], 0o777)
s.listen()
print("listening", flush=True)
while True:
    conn, _ = s.accept()
    got = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += chunk
        # A tool that sent a request waits for the answer: close after a whole line.
        if got.endswith(b"\n"):
            break
    conn.close()
    print("got", len(got), "bytes", flush=True)
