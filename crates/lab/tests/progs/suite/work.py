"""CPU work, files and late imports across moves.

Usage: work.py DIR TAG. Three rounds; round K prints "computing K", computes, prints its
result, then reads one line from stdin: the test moves the program while it computes and
sends the line once the move is done, so what follows the line runs after the move.

A file opened before the first move and one opened after it are written and read back, and
so are sockets: a socket pair made before the first move carries bytes after it, and a UDP
socket made after it sends a datagram to itself (bind, sendto, recvfrom with addresses);
poll(2) and select(2) (pselect6 in glibc) see the pair readable, and isatty(3) asks the
terminal ioctl (TCGETS) at the remote. sendmsg/recvmsg gather and scatter data, pass a
descriptor (SCM_RIGHTS), carry an address and report a datagram cut short (MSG_TRUNC).
After the first move it imports decimal (C extension _decimal: dlopen, i.e. mmap of a home
file, at the remote), after the third hashlib (_hashlib and libcrypto). The output says
nothing about time, pids or places; the exit status is 3.
"""
import array
import os
import select
import socket
import sys

ROUND = 600_000


def crunch(seed, n):
    x, acc = seed, 0
    for i in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        acc = (acc + (x >> 33) * (i | 1)) % 1000000007
    return acc


def gate():
    line = sys.stdin.readline()
    if line != "\n":
        print(f"FAIL: gate read {line!r}", flush=True)
        sys.exit(1)


work_dir, tag = sys.argv[1], sys.argv[2]
before = open(os.path.join(work_dir, f"py-before-{tag}.txt"), "w+")
before.write("opened before the first move\n")
before.flush()
print("_decimal loaded at start:", "_decimal" in sys.modules, flush=True)
print("_hashlib loaded at start:", "_hashlib" in sys.modules, flush=True)
pair = socket.socketpair()

results = []
after = None
for k in (1, 2, 3):
    print(f"computing {k}", flush=True)
    r = crunch(k, ROUND)
    results.append(r)
    print(f"round {k}: {r}", flush=True)
    before.write(f"round {k}: {r}\n")
    before.flush()
    gate()
    if k == 1:
        import decimal

        decimal.getcontext().prec = 40
        third = decimal.Decimal(sum(results)) / decimal.Decimal(3)
        print(f"decimal after move 1: {third}", flush=True)
        after = open(os.path.join(work_dir, f"py-after-{tag}.txt"), "w+")
        pair[0].sendall(b"through a socket pair made before the move")
        print("pair:", pair[1].recv(100).decode(), flush=True)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.sendto(b"a datagram sent after the move", udp.getsockname())
        data, sender = udp.recvfrom(100)
        print("udp:", data.decode(), sender == udp.getsockname(), flush=True)
        poller = select.poll()
        poller.register(pair[1], select.POLLIN)
        pair[0].send(b"!")
        print("poll:", [event for _, event in poller.poll(5000)], flush=True)
        readable, _, _ = select.select([pair[1]], [], [], 5.0)
        print("select:", readable == [pair[1]], flush=True)
        pair[1].recv(1)  # the byte poll and select saw
        passed = open(os.path.join(work_dir, f"py-before-{tag}.txt"))
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [passed.fileno()]))]
        pair[0].sendmsg([b"scat", b"tered"], rights)
        head, tail = bytearray(4), bytearray(16)
        n, anc, flags, _ = pair[1].recvmsg_into([head, tail], socket.CMSG_SPACE(4))
        fd = array.array("i", anc[0][2][:4])[0]
        print("recvmsg:", head.decode(), tail[: n - 4].decode(), flags, flush=True)
        print("passed descriptor reads:", os.pread(fd, 28, 0).decode(), flush=True)
        os.close(fd)
        passed.close()
        udp.sendmsg([b"to ", b"myself"], [], 0, udp.getsockname())
        data, _, _, sender = udp.recvmsg(64)
        print("udp recvmsg:", data.decode(), sender == udp.getsockname(), flush=True)
        d0, d1 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        d0.send(b"0123456789")
        data, _, flags, _ = d1.recvmsg(4)
        print("truncated:", data.decode(), flags & socket.MSG_TRUNC != 0, flush=True)
        print("stdout is a terminal:", os.isatty(1), flush=True)
    after.write(f"after move {k}: {r}\n")
    after.flush()

import hashlib

before.seek(0)
after.seek(0)
digest = hashlib.sha256()
for f in (before, after):
    text = f.read()
    print(text, end="", flush=True)
    digest.update(text.encode())
print(f"checksum {digest.hexdigest()}", flush=True)
sys.exit(3)
