"""Instructions per recommendation, counted by valgrind's callgrind: a figure that does not move
with the machine's speed, so two builds compare in any minute. (On these machines the CPU time of
one build moved 30 % from one minute to the next, and 2.5x between sessions.)

    .venv/bin/python -m bench.instructions                      # MovieLens-100K, every viewer
    .venv/bin/python -m bench.instructions --dataset synthetic  # 1 M ratings, 500 viewers

It runs itself under `valgrind --tool=callgrind` twice, with `PYTHONHASHSEED=0`: once building
the matrix and warming up, once doing the same and then recommending for every chosen viewer. The
difference over the number of viewers is the figure. It counts what the process executes, numpy's
C loops included, not cache misses or stalls: a change that saves instructions but touches more
memory can still be slower, so it complements the timed benches rather than replacing them.
The set is read and saved as arrays first; the runs build the matrix from them as a worker does
from its COPY. `--profile FILE` keeps the full run's callgrind file, for `callgrind_annotate
FILE` (instructions by function). Needs valgrind (Debian's package).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import machine
from fastapi_recom.recommender import IdMap, RatingMatrix, Strategy

ROOT = Path(__file__).resolve().parent.parent
# Recommendations before the counted ones in both runs: the first calls of a process fill
# caches (film UUIDs, the popular order) that a serving worker has long since filled.
WARM_UP = 50


def movielens_arrays() -> dict[str, np.ndarray]:
    from fastapi_recom.movielens import (
        fetch_dataset,
        movie_uuid,
        read_interactions,
        to_score,
        user_uuid,
    )

    interactions = read_interactions(fetch_dataset())
    users = np.array([user_uuid(r.user_id).bytes for r in interactions], dtype="S16")
    movies = np.array([movie_uuid(r.item_id).bytes for r in interactions], dtype="S16")
    user_raw, rows = np.unique(users, return_inverse=True)
    movie_raw, cols = np.unique(movies, return_inverse=True)
    return {
        "user_raw": user_raw,
        "movie_raw": movie_raw,
        "rows": rows.astype(np.int32),
        "cols": cols.astype(np.int32),
        "scores": np.array([to_score(r.rating) for r in interactions], dtype=np.int8),
        "chosen": np.arange(user_raw.shape[0], dtype=np.int32),
    }


def synthetic_arrays(n_ratings: int, viewers: int) -> dict[str, np.ndarray]:
    from bench.latency import synthetic_set

    rows, cols, scores, user_bytes, movie_bytes = synthetic_set(n_ratings)
    n_users = user_bytes.shape[0]
    return {
        "user_raw": user_bytes.view("S16").ravel(),
        "movie_raw": movie_bytes.view("S16").ravel(),
        "rows": rows,
        "cols": cols,
        "scores": scores.astype(np.int8),
        "chosen": np.random.default_rng(12).choice(
            n_users, size=min(viewers, n_users), replace=False
        ),
    }


def child(data: Path, count: int, strategy: Strategy) -> None:
    """What runs under valgrind: build the matrix as a worker does, warm up, then `count`
    recommendations."""
    with np.load(data) as arrays:
        user_ids, movie_ids = IdMap(arrays["user_raw"]), IdMap(arrays["movie_raw"])
        matrix = RatingMatrix(user_ids, movie_ids, arrays["rows"], arrays["cols"], arrays["scores"])
        users = [user_ids[int(row)] for row in arrays["chosen"]]
    for user in users[:WARM_UP]:
        matrix.recommend(user, 10, strategy)
    for user in users[:count]:
        matrix.recommend(user, 10, strategy)


def instructions(data: Path, count: int, strategy: Strategy) -> int:
    """Instructions executed by one run under callgrind."""
    out = data.with_name(f"callgrind.{count}.out")
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        sys.executable, "-m", "bench.instructions", "--child", str(data), "--count", str(count),
        "--strategy", json.dumps(dataclasses.asdict(strategy)),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"valgrind run failed:\n{done.stderr[-3000:]}")
    summary = re.search(r"^summary: (\d+)", out.read_text(), re.MULTILINE)
    if summary is None:
        raise SystemExit(f"no summary line in {out}")
    return int(summary.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=["ml100k", "synthetic"], default="ml100k")
    parser.add_argument("--ratings", type=int, default=1_000_000, help="synthetic set's size")
    parser.add_argument("--viewers", type=int, default=500, help="synthetic viewers to sample")
    parser.add_argument(
        "--profile", type=Path, help="keep the full run's callgrind file here (callgrind_annotate)"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--strategy", type=json.loads, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # Not from Settings: importing the service's configuration costs a run 2 G instructions.
        child(args.child, args.count, Strategy(**args.strategy))
        return
    from fastapi_recom.config import Settings

    strategy = Settings().strategy
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found: apt-get install valgrind")
    print(f"machine: {machine()}")
    if args.dataset == "ml100k":
        arrays = movielens_arrays()
    else:
        arrays = synthetic_arrays(args.ratings, args.viewers)
    viewers = int(arrays["chosen"].shape[0])
    with tempfile.TemporaryDirectory() as folder:
        # The set is read once, here: parsed under valgrind it would cost minutes.
        data = Path(folder) / "set.npz"
        np.savez(data, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        base = instructions(data, 0, strategy)
        total = instructions(data, viewers, strategy)
        if args.profile:
            shutil.copyfile(data.with_name(f"callgrind.{viewers}.out"), args.profile)
    print(
        f"{args.dataset}: {(total - base) / viewers / 1e6:.3f} M instructions per "
        f"recommendation over {viewers} viewers (the run: {total / 1e9:.2f} G, of which "
        f"starting Python and building the matrix {base / 1e9:.2f} G)"
    )


if __name__ == "__main__":
    main()
