"""threads: a second thread waits on an event; says "ready", waits until GOFILE exists, then
lets the thread finish and prints "done". usage: threads.py GOFILE"""
import os
import sys
import threading
import time

go = threading.Event()
worker = threading.Thread(target=go.wait)
worker.start()
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
go.set()
worker.join()
print("done", flush=True)
