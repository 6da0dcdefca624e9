"""A process's CPU time and run-queue wait, read from /proc (Linux), and the stretches
in which it used under a tenth of a core. No TensorFlow: the benchmark samples its
children with it and bench/stall_repro.py samples itself.

On a shared machine a process also gets little CPU when other processes hold the
cores; /proc/PID/task/*/schedstat tells the two apart: its second field is the time
a thread was ready to run but waiting for a core. A stall is a stretch in which the
process used under a tenth of a core and was not kept waiting for one either.
"""
import os
from pathlib import Path

IDLE_SHARE = 0.1  # under a tenth of a core counts as idle


def read(pid=None):
    """(CPU seconds, run-queue wait seconds) summed over the process's threads."""
    cpu = wait = 0
    for task in Path(f"/proc/{pid or os.getpid()}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:  # the thread ended between listing and reading
            continue
        cpu, wait = cpu + int(fields[0]), wait + int(fields[1])
    return cpu / 1e9, wait / 1e9


def idle_stretches(samples, share=IDLE_SHARE):
    """[(start, seconds)] of the runs of consecutive (wall, cpu, wait) samples in which
    the process used under `share` of a core and waited for one under `share` too."""
    stretches, start = [], None
    for (t0, c0, w0), (t1, c1, w1) in zip(samples, samples[1:]):
        idle = (c1 - c0) < share * (t1 - t0) and (w1 - w0) < share * (t1 - t0)
        if idle and start is None:
            start = t0
        if not idle and start is not None:
            stretches.append((start, t0 - start))
            start = None
    if start is not None:
        stretches.append((start, samples[-1][0] - start))
    return stretches


def longest_between(samples, begin, end, share=IDLE_SHARE):
    """The longest idle stretch (seconds) among the samples taken from begin to end."""
    inside = [s for s in samples if begin <= s[0] <= end]
    return max((seconds for _, seconds in idle_stretches(inside, share)), default=0.0)
