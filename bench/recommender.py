"""In-process cost of the recommender: load time, resident memory and CPU per recommendation.

Loads the rating matrix the way a recom worker does (binary COPY from the database that
bench/latency.py filled) and calls `RatingMatrix.recommend` for sampled viewers, without HTTP:

    .venv/bin/python -m bench.recommender --dataset synthetic
    .venv/bin/python -m bench.recommender --dataset ml100k --dump /tmp/picks.json
    .venv/bin/python -m bench.recommender --dataset ml100k --compare /tmp/picks.json

`--dump` writes every sampled viewer's picks and `--compare` checks another version's picks
against such a file (same films in the same order, scores within 1e-4).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import time
from pathlib import Path

import numpy as np
from sqlalchemy.ext.asyncio import create_async_engine

from bench import machine
from bench.latency import bench_env, dsn
from fastapi_recom.config import Settings
from fastapi_recom.refresher import load_matrix


def rss_mb() -> dict[str, float]:
    """This process's resident memory, anonymous (heap, arrays) and file-backed (code)."""
    text = Path("/proc/self/smaps_rollup").read_text()
    fields = {name: int(kb) / 1024 for name, kb in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
    return {
        "rss": fields["Rss"],
        "anon": fields["Anonymous"],
        "file": fields["Rss"] - fields["Anonymous"],
    }


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def main_async(args: argparse.Namespace) -> None:
    env = bench_env(args.suffix)
    url = dsn(env).replace("postgresql://", "postgresql+asyncpg://")
    engine = create_async_engine(url)
    before = rss_mb()
    started = time.perf_counter()
    matrix, _ = await load_matrix(engine)
    load_seconds = time.perf_counter() - started
    after_load = rss_mb()
    await engine.dispose()
    print(
        f"loaded {matrix.n_users:,} viewers, {matrix.n_movies:,} films, {matrix.nnz:,} ratings "
        f"in {load_seconds:.2f} s"
    )
    sizes = matrix.nbytes()
    print(
        "matrix, MB: "
        + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sizes.items())
        + f"; total {sum(sizes.values()) / 2**20:.1f}"
    )
    print(
        f"RSS before load {before['rss']:.0f} MB (anon {before['anon']:.0f}), after load "
        f"{after_load['rss']:.0f} MB (anon {after_load['anon']:.0f})"
    )
    strategy = Settings().strategy
    # Rows follow the COPY's order, which changes as rows are updated: sample by id instead.
    everyone = sorted(matrix.user_ids[row] for row in range(matrix.n_users))
    rng = np.random.default_rng(3)
    picked = rng.choice(len(everyone), min(args.viewers, len(everyone)), replace=False)
    users = [everyone[int(i)] for i in picked]
    for user in users[:50]:  # warm-up
        matrix.recommend(user, 10, strategy)
    times: list[float] = []
    picks: dict[str, list[tuple[str, float]]] = {}
    for user in users:
        cpu = time.thread_time()
        recommendation = matrix.recommend(user, 10, strategy)
        times.append((time.thread_time() - cpu) * 1000)
        picks[str(user)] = [(str(p.movie_id), p.score) for p in recommendation.picks]
    after_run = rss_mb()
    print(
        f"recommend, {len(users)} viewers, CPU ms: median {statistics.median(times):.3f}, "
        f"p90 {pct(times, 0.9):.3f}, p99 {pct(times, 0.99):.3f}, max {max(times):.3f}, "
        f"mean {statistics.fmean(times):.3f}"
    )
    print(f"RSS after the requests {after_run['rss']:.0f} MB (anon {after_run['anon']:.0f})")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.dump:
        args.dump.write_text(json.dumps(picks))
    if args.compare:
        want = json.loads(args.compare.read_text())
        differ = [
            user
            for user, got in picks.items()
            if [m for m, _ in got] != [m for m, _ in want[user]]
            or any(abs(a[1] - b[1]) > 1e-4 for a, b in zip(got, want[user], strict=True))
        ]
        print(f"compared with {args.compare}: {len(differ)} of {len(picks)} viewers differ")
        if differ:
            raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--dataset", choices=["ml100k", "synthetic"], default="synthetic")
    parser.add_argument("--suffix", help="database suffix, as for bench.latency")
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--dump", type=Path, help="write the picks to this JSON file")
    parser.add_argument("--compare", type=Path, help="compare the picks with this JSON file")
    args = parser.parse_args()
    args.suffix = args.suffix or f"{os.environ.get('POSTGRES_DB_SUFFIX', '')}_bench_{args.dataset}"
    print(f"machine: {machine()}")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
