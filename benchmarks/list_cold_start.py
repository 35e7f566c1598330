"""Cold start of ``segkit list`` against ``python -c "import torch"``, same machine, same run.

``segkit list`` reads registry.toml and never imports torch, so it should start in a
fraction of the time torch alone takes to import. Each command runs as a fresh
subprocess; the commands are alternated (A B C A B C ...) ``--repeats`` times after
one untimed warm-up round (which fills the OS file cache), and the median wall time
of each is reported.

    python benchmarks/list_cold_start.py [--repeats 11] [--quick]

Prints a markdown table and the machine. The ratio is what to compare across machines.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import describe_machine, machine, markdown_table, median


def _segkit_command() -> list[str]:
    """The installed ``segkit`` console script next to this Python, else ``python -m segkit``."""
    script = Path(sys.executable).with_name("segkit")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "segkit"]


def _wall_seconds(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit status {done.returncode}:\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11, help="timed runs of each command (default 11)")
    parser.add_argument("--quick", action="store_true", help="3 repeats: a smoke run")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats

    commands = {
        "segkit list": _segkit_command() + ["list"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        'python -c "pass" (interpreter only)': [sys.executable, "-c", "pass"],
    }
    for command in commands.values():  # warm-up: file cache, .pyc files
        _wall_seconds(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            times[name].append(_wall_seconds(command))

    torch_median = median(times['python -c "import torch"'])
    rows = []
    for name, values in times.items():
        m = median(values)
        rows.append([name, m * 1000, min(values) * 1000, max(values) * 1000, m / torch_median])
    print(markdown_table(["command", "median ms", "min ms", "max ms", "relative to import torch"], rows))
    print(f"\n{repeats} alternating runs of each after one warm-up round; segkit: {' '.join(commands['segkit list'])}")
    print(describe_machine(machine()))


if __name__ == "__main__":
    main()
