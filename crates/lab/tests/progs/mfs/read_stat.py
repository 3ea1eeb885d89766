"""Read a file whole 5 times (1 MiB reads) and stat it 5 x 2000 times; print the medians
with their spread. For MFS figures by hand (docs/mfs.md, "Figures"): run it on a file at
node 1 from node 1 directly, through node 1's own /mfs/1, and through node 2's /mfs/1."""
import os
import sys
import time

path = sys.argv[1]
reads, stats = [], []
for _ in range(5):
    start, n = time.monotonic(), 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            n += len(chunk)
    reads.append(n / (time.monotonic() - start) / 2**20)
for _ in range(5):
    start = time.monotonic()
    for _ in range(2000):
        os.stat(path)
    stats.append((time.monotonic() - start) / 2000 * 1e6)
reads.sort()
stats.sort()
print(f"{path}: read MiB/s median {reads[2]:.0f} (min {reads[0]:.0f}, max {reads[4]:.0f}); "
      f"stat us median {stats[2]:.0f} (min {stats[0]:.0f}, max {stats[4]:.0f})")
