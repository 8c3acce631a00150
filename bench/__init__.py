"""Benchmarks: scripts that print figures, each stating the machine it ran on."""

from __future__ import annotations

import os
import platform
import time


def machine() -> str:
    """CPU model, cores, memory, kernel, Python, the load before the run and a CPU yardstick:
    the same build measures differently from one machine, and one minute, to the next."""
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        mem_kb = int(info.readline().split()[1])
    load = os.getloadavg()
    # A CPU-bound yardstick: about 8-12 us on an idle modern core; higher means contention.
    started = time.perf_counter()
    for _ in range(2000):
        sum(range(1000))
    yardstick = (time.perf_counter() - started) / 2000 * 1e6
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_kb / 1024**2:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; load average before: "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; sum(range(1000)) takes {yardstick:.0f} us"
    )
