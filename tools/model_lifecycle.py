"""Time to open and close each model's runtime, and its peak memory over all its processes.

Run: .venv/bin/python tools/model_lifecycle.py          (UDPCHAT_START_METHOD=spawn|forkserver
for the process model's other start methods). Each figure is the median of 7 fresh
interpreters; "open" includes importing the model's module, "peak RSS" is VmHWM summed
over the interpreter and its children.
"""

import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
from udpchat.runtimes import create_runtime
t1 = time.perf_counter()
runtime = create_runtime(sys.argv[1], "alice", bind="127.0.0.1", peers=[("127.0.0.1", 9)])
runtime.open()
t2 = time.perf_counter()

def peak_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0

pids = [os.getpid()]
with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as children:
    pids += [int(pid) for pid in children.read().split()]
peak = sum(peak_kib(pid) for pid in pids)
t3 = time.perf_counter()
runtime.close()
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "open": t2 - t1, "close": t4 - t3,
                  "peak_kib": peak, "processes": len(pids)}))
"""

for model in ("thread", "process", "asyncio"):
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", CHILD, model], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(7)
    ]
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(
        f"{model:8s} open {median['open'] * 1000:6.1f} ms  close {median['close'] * 1000:5.1f} ms"
        f"  peak RSS {median['peak_kib'] / 1024:5.1f} MiB over {int(median['processes'])}"
        f" process(es)  (import of udpchat.runtimes {median['import'] * 1000:.0f} ms)"
    )
