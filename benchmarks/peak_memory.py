"""Run a command and measure its wall time and the peak memory of its whole process tree (Linux).

A thread samples every ``interval`` seconds (default 0.2; at 0.05 the walk of /proc took half a core of a
2-core machine in a CT preprocessing run): it walks ``/proc/*/stat`` for the
command's descendants (parent-pid chains from the command's pid, so forked and spawned workers
count, grandchildren included) and sums, over the command and every descendant alive at that
moment, the resident memory (``Rss``) and the proportional set size (``Pss``) of
``/proc/PID/smaps_rollup``. PSS divides each shared page among the processes that map it, so the
copy-on-write pages a forked worker shares with its parent are counted once, where summed RSS
counts them in every process. Reported are the largest sums seen, and the largest single-process
peak (``VmHWM`` of ``/proc/PID/status``, the kernel's own high-water mark, so it is exact even
between samples; also the ``ru_maxrss`` of the command's ``wait4``, which covers the descendants it
waited for). The tree sums are samples: a peak shorter than the interval can be missed, and a
process that leaves the tree (re-parented to init when its parent exits first) stops counting.

    python benchmarks/peak_memory.py [--interval 0.2] [--log FILE] [--json FILE] -- CMD [ARG ...]

prints one JSON object: ``seconds``, ``peak_tree_rss_bytes``, ``peak_tree_pss_bytes``,
``peak_process_hwm_bytes``, ``returncode`` (and ``max_processes``, ``samples``, ``interval``).
``--selftest`` measures a Python parent holding 500 MB that forks 2 children (one touching only
shared pages, one writing its own 500 MB copy) and checks the numbers add up. From Python::

    from peak_memory import measure
    result = measure(["python", "-c", "..."], env=None, cwd=None, log=Path("run.log"))
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["measure", "tree", "process_memory"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process now (those that vanish while being read are left out)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                text = stat.read()
        except OSError:
            continue
        # the command name (2nd field) is in parentheses and may hold spaces and ')': split after the last ')'
        fields = text[text.rfind(b")") + 2:].split()
        if len(fields) > 1:
            out[int(entry.name)] = int(fields[1])
    return out


def tree(root: int) -> list[int]:
    """``root`` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def process_memory(pid: int) -> tuple[int, int, int] | None:
    """(RSS, PSS, VmHWM) bytes of one process; None when it is gone (or a zombie, which holds no memory)."""
    rss = pss = hwm = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        try:  # no smaps_rollup (an old kernel, another user's process): RSS from statm, PSS unknown (= RSS)
            with open(f"/proc/{pid}/statm", "rb") as statm:
                rss = int(statm.read().split()[1]) * _PAGE
            pss = pss or rss
        except (OSError, ValueError, IndexError):
            return None
    return rss, pss, hwm


class _Sampler(threading.Thread):
    def __init__(self, root: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_rss = self.peak_pss = self.peak_hwm = 0
        self.max_processes = self.samples = 0
        self.stop = threading.Event()

    def sample(self) -> None:
        rss = pss = alive = 0
        for pid in tree(self.root):
            memory = process_memory(pid)
            if memory is None:
                continue
            alive += 1
            rss += memory[0]
            pss += memory[1]
            self.peak_hwm = max(self.peak_hwm, memory[2])
        if alive:
            self.samples += 1
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.max_processes = max(self.max_processes, alive)

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            self.sample()
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


def measure(command: list[str], env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
            log: Path | None = None, interval: float = 0.2) -> dict[str, Any]:
    """Run ``command`` to its end; its wall seconds, return code and tree memory peaks (see the module doc).

    ``log``: the command's stdout and stderr go to this file (else they are inherited). The command's
    failure is not an error here: look at ``returncode``.
    """
    handle = open(log, "wb") if log is not None else None
    try:
        started = time.perf_counter()
        process = subprocess.Popen([str(c) for c in command], env=env, cwd=cwd, stdout=handle,
                                   stderr=subprocess.STDOUT if handle is not None else None)
        sampler = _Sampler(process.pid, interval)
        sampler.sample()
        sampler.start()
        try:
            # wait4 on the pid itself: its rusage gives the largest peak RSS of it and the children it reaped;
            # the child is still a zombie until then, so the sampler sees the tree up to its exit
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop.set()
        sampler.join()
    finally:
        if handle is not None:
            handle.close()
    return {"seconds": seconds, "peak_tree_rss_bytes": sampler.peak_rss, "peak_tree_pss_bytes": sampler.peak_pss,
            "peak_process_hwm_bytes": max(sampler.peak_hwm, usage.ru_maxrss * 1024),
            "returncode": process.returncode, "max_processes": sampler.max_processes, "samples": sampler.samples,
            "interval": interval}


_SELFTEST = r"""
import os, sys, time
mb = 500
block = bytearray(mb * 2**20)              # the parent's 500 MB, touched page by page
for i in range(0, len(block), 4096): block[i] = 1
time.sleep(0.3)
pids = []
for k in range(2):
    pid = os.fork()
    if pid == 0:
        if k == 1:                              # child 1 writes every page: its own private copy
            for i in range(0, len(block), 4096): block[i] = 2
        time.sleep(1.5)                          # child 0 only shares the parent's pages
        os._exit(0)
    pids.append(pid)
for pid in pids: os.waitpid(pid, 0)
"""


def selftest(interval: float) -> dict[str, Any]:
    """The numbers for :data:`_SELFTEST` and whether they are as expected (within 15%)."""
    result = measure([sys.executable, "-c", _SELFTEST], interval=interval)
    mib = {k: v / 2**20 for k, v in result.items() if k.endswith("_bytes")}
    # RSS: parent 500 + child 0 500 (shared, counted again) + child 1 500 = 1500; PSS: 500 shared once + 500 = 1000
    expected = {"peak_tree_rss_bytes": 1500, "peak_tree_pss_bytes": 1000, "peak_process_hwm_bytes": 500}
    checks = {k: abs(mib[k] - e) / e < 0.15 for k, e in expected.items()}
    return {**result, "mib": mib, "expected_mib": expected, "ok": all(checks.values()) and result["returncode"] == 0}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     usage="%(prog)s [--interval S] [--log FILE] [--json FILE] -- CMD [ARG ...]")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("--log", type=Path, help="the command's stdout and stderr go here")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--selftest", action="store_true", help="measure 500 MB in a parent and 2 forked children")
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.selftest:
        result = selftest(args.interval)
    elif not command:
        parser.error("no command: give it after --")
    else:
        result = measure(command, log=args.log, interval=args.interval)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.selftest:
        return 0 if result["ok"] else 1
    return result["returncode"] if result["returncode"] >= 0 else 128 - result["returncode"]


if __name__ == "__main__":
    sys.exit(main())
