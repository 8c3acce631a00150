"""Latency, throughput, freshness, memory and start-up of GET /recom/v1/user/{id} through nginx.

Loads (a) MovieLens-100K or (b) a synthetic long-tailed set of ~10 M ratings into a database of
its own (`recom${POSTGRES_DB_SUFFIX}_bench_<dataset>`), starts recom with two uvicorn workers
behind the project's nginx template, and drives it with a small keep-alive HTTP client:

    .venv/bin/python -m bench.latency --dataset ml100k
    .venv/bin/python -m bench.latency --dataset synthetic --ratings 10000000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import numpy as np
import uvloop

from bench import machine
from fastapi_recom.movielens import (
    fetch_dataset,
    movie_uuid,
    read_interactions,
    read_items,
    to_score,
    user_uuid,
)
from scripts import bootstrap
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------- data


def bench_env(suffix: str) -> dict[str, str]:
    env = bootstrap.load_env()
    env.update(bootstrap.bench_environment(env))
    env.update({"POSTGRES_DB_SUFFIX": suffix, "LOG_LEVEL": "WARNING"})
    return env


def dsn(env: dict[str, str]) -> str:
    password = env.get("POSTGRES_PASSWORD", "")
    auth = f"{env.get('POSTGRES_USER', 'postgres')}:{password}" if password else "postgres"
    return (
        f"postgresql://{auth}@{env.get('POSTGRES_HOST', '127.0.0.1')}:"
        f"{env.get('POSTGRES_PORT', '5432')}/recom{env['POSTGRES_DB_SUFFIX']}"
    )


def _copy_rows(users: np.ndarray, movies: np.ndarray, scores: np.ndarray) -> bytes:
    """Binary COPY rows of (user_id, movie_id, score, rated_at): 60 bytes each, built by numpy."""
    row = np.dtype(
        [
            ("n", ">i2"),
            ("l1", ">i4"),
            ("u", "u1", (16,)),
            ("l2", ">i4"),
            ("m", "u1", (16,)),
            ("l3", ">i4"),
            ("s", ">i2"),
            ("l4", ">i4"),
            ("t", ">i8"),
        ]
    )
    out = np.empty(users.shape[0], dtype=row)
    out["n"], out["l1"], out["l2"], out["l3"], out["l4"] = 4, 16, 16, 2, 8
    out["u"], out["m"], out["s"] = users, movies, scores
    out["t"] = int((datetime.now(UTC) - PG_EPOCH).total_seconds() * 1e6)
    return out.tobytes()


async def _copy_binary(conn: asyncpg.Connection, chunks: AsyncIterator[bytes]) -> None:
    async def stream() -> AsyncIterator[bytes]:
        yield b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
        async for chunk in chunks:
            yield chunk
        yield b"\xff\xff"

    await conn.copy_to_table(
        "rating", source=stream(), columns=["user_id", "movie_id", "score", "rated_at"],
        format="binary",
    )  # fmt: skip


async def load_movielens(env: dict[str, str]) -> list[uuid.UUID]:
    data = fetch_dataset()
    interactions = read_interactions(data)
    users = np.frombuffer(
        b"".join(user_uuid(r.user_id).bytes for r in interactions), dtype=np.uint8
    ).reshape(-1, 16)
    movies = np.frombuffer(
        b"".join(movie_uuid(r.item_id).bytes for r in interactions), dtype=np.uint8
    ).reshape(-1, 16)
    scores = np.array([to_score(r.rating) for r in interactions], dtype=np.int16)
    conn = await asyncpg.connect(dsn(env))
    try:
        await conn.execute("TRUNCATE rating, movie CASCADE")

        async def chunks() -> AsyncIterator[bytes]:
            yield _copy_rows(users, movies, scores)

        await _copy_binary(conn, chunks())
        await conn.executemany(
            "INSERT INTO movie (movie_id, title, release_year) VALUES ($1, $2, $3)",
            [(movie_uuid(i.item_id), i.title, i.year) for i in read_items(data)],
        )
        await conn.execute("ANALYZE rating")
    finally:
        await conn.close()
    return sorted({user_uuid(r.user_id) for r in interactions})


def synthetic(n_ratings: int, n_users: int, n_movies: int, seed: int = 7) -> tuple[np.ndarray, ...]:
    """Long-tailed like real ratings: lognormal activity per viewer, Zipf-like film popularity
    (flattened head, so no film is rated by more than about half the viewers)."""
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=n_users)
    activity = np.clip(activity / activity.sum() * n_ratings * 1.1, 5, n_movies // 4)
    per_user = activity.round().astype(np.int64)
    rows = np.repeat(np.arange(n_users, dtype=np.int64), per_user)
    weights = 1.0 / (np.arange(n_movies) + 30.0) ** 1.05
    cdf = np.cumsum(weights / weights.sum())
    cols = np.searchsorted(cdf, rng.random(rows.shape[0])).clip(0, n_movies - 1)
    keys = np.unique(rows * n_movies + cols)
    rows, cols = keys // n_movies, keys % n_movies
    quality = rng.normal(0, 1.2, n_movies)
    bias = rng.normal(0, 0.8, n_users)
    scores = np.clip(
        np.rint(6.5 + quality[cols] + bias[rows] + rng.normal(0, 1.5, rows.shape[0])), 1, 10
    ).astype(np.int16)
    return rows.astype(np.int32), cols.astype(np.int32), scores


def synthetic_set(n_ratings: int) -> tuple[np.ndarray, ...]:
    """(b)'s shape at any size: a viewer per 100 ratings, a film per 500, `synthetic`'s
    ratings, and random version-4 UUIDs for both as rows of 16 bytes."""
    n_users, n_movies = n_ratings // 100, n_ratings // 500
    rows, cols, scores = synthetic(n_ratings, n_users, n_movies)
    rng = np.random.default_rng(11)
    user_bytes = rng.integers(0, 256, (n_users, 16), dtype=np.uint8)
    movie_bytes = rng.integers(0, 256, (n_movies, 16), dtype=np.uint8)
    for ids in (user_bytes, movie_bytes):  # version 4, RFC 4122 variant
        ids[:, 6] = (ids[:, 6] & 0x0F) | 0x40
        ids[:, 8] = (ids[:, 8] & 0x3F) | 0x80
    return rows, cols, scores, user_bytes, movie_bytes


async def load_synthetic(env: dict[str, str], n_ratings: int) -> list[uuid.UUID]:
    started = time.perf_counter()
    rows, cols, scores, user_bytes, movie_bytes = synthetic_set(n_ratings)
    n_users, n_movies = user_bytes.shape[0], movie_bytes.shape[0]
    popularity = np.bincount(cols, minlength=n_movies)
    print(
        f"synthetic: {rows.shape[0]:,} ratings, {n_users:,} viewers, {n_movies:,} films; "
        f"most-rated film {popularity.max():,} viewers ({popularity.max() / n_users:.0%}); "
        f"median viewer {int(np.median(np.bincount(rows))):,} ratings; "
        f"generated in {time.perf_counter() - started:.1f} s"
    )
    conn = await asyncpg.connect(dsn(env))
    try:
        await conn.execute("TRUNCATE rating, movie CASCADE")
        # Indexes are rebuilt after the bulk load: much faster than maintaining them per row.
        await conn.execute("ALTER TABLE rating DROP CONSTRAINT pk_rating")
        await conn.execute("DROP INDEX IF EXISTS ix_rating_updated_at, ix_rating_movie_id")
        step = 500_000

        async def chunks() -> AsyncIterator[bytes]:
            for at in range(0, rows.shape[0], step):
                yield _copy_rows(
                    user_bytes[rows[at : at + step]],
                    movie_bytes[cols[at : at + step]],
                    scores[at : at + step],
                )

        started = time.perf_counter()
        await _copy_binary(conn, chunks())
        await conn.execute(
            "ALTER TABLE rating ADD CONSTRAINT pk_rating PRIMARY KEY (user_id, movie_id)"
        )
        await conn.execute("CREATE INDEX ix_rating_updated_at ON rating (updated_at)")
        await conn.execute("CREATE INDEX ix_rating_movie_id ON rating (movie_id)")
        await conn.execute("ANALYZE rating")
        print(f"COPY and indexes: {time.perf_counter() - started:.1f} s")
    finally:
        await conn.close()
    sample = np.random.default_rng(3).choice(n_users, 2000, replace=False)
    return [uuid.UUID(bytes=user_bytes[i].tobytes()) for i in sample]


# ---------------------------------------------------------------- processes


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn's master and workers)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(entry.name))
    total = 0
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(match.group(1)) if match else 0
    return total / 1024


def worker_rss(pid: int) -> list[float]:
    values = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    status = (entry / "status").read_text()
                    values.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)  # type: ignore[union-attr]
            except (OSError, AttributeError):
                continue
    return values


def cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU time of each of a process's children (the uvicorn workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    times = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    return times


# ---------------------------------------------------------------- load


class Client:
    """One keep-alive HTTP/1.1 connection; the fewer Python steps per request, the less the load
    generator steals from the two cores it shares with nginx and recom."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def __aenter__(self) -> Client:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.writer.close()

    async def get(self, request: bytes) -> tuple[int, bytes]:
        try:
            return await self._get(request)
        except (asyncio.IncompleteReadError, ConnectionError):
            # nginx closes a keep-alive connection after `keepalive_requests`: open another.
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            return await self._get(request)

    async def _get(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        match = re.search(rb"(?i)content-length: *(\d+)", head)
        assert match, head
        body = await self.reader.readexactly(int(match.group(1)))
        return status, body


class Tokens:
    """Access tokens shaped like fastapi_auth's; the key is parsed once (tests.support parses
    the PEM for every token, which takes minutes for thousands of viewers)."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        pem = bootstrap.load_env()["JWT_PRIVATE_KEY"].replace("\\n", "\n").encode()
        self.key = load_pem_private_key(pem, password=None)

    def __call__(self, user: uuid.UUID) -> str:
        import jwt

        now = time.time()
        claims = {
            "sub": str(user),
            "aud": "fastapi-users:auth",
            "iat": now,
            "exp": int(now + 3600),
            "jti": uuid.uuid4().hex,
            "email": None,
            "is_superuser": False,
            "is_verified": True,
        }
        return jwt.encode(claims, self.key, algorithm="RS256")  # type: ignore[arg-type]


def request_bytes(port: int, path: str, token: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()


async def drive(
    port: int, requests: list[bytes], concurrency: int, seconds: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def one(offset: int) -> None:
        nonlocal errors
        async with Client("127.0.0.1", port) as client:
            i = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status, _ = await client.get(requests[i % len(requests)])
                latencies.append(time.perf_counter() - started)
                errors += status != 200
                i += 7

    await asyncio.gather(*(one(n * 101) for n in range(concurrency)))
    return latencies, errors


def report(name: str, latencies: list[float], errors: int, seconds: float) -> tuple[float, float]:
    """Print one run's line; return its requests per second and p99 (ms)."""
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    print(
        f"{name:<28} {len(ordered) / seconds:8.0f} req/s  p50 {pct(0.5):6.2f} ms  "
        f"p95 {pct(0.95):6.2f} ms  p99 {pct(0.99):6.2f} ms  max {ordered[-1] * 1000:7.2f} ms  "
        f"errors {errors}"
    )
    return len(ordered) / seconds, pct(0.99)


async def freshness(
    port: int, env: dict[str, str], tokens: dict[uuid.UUID, str], trials: int
) -> None:
    """Rate a viewer's current top pick in PostgreSQL; time until every worker drops it."""
    conn = await asyncpg.connect(dsn(env))
    delays = []
    rng = random.Random(5)
    try:
        async with Client("127.0.0.1", port) as client:
            for user in rng.sample(sorted(tokens), trials):
                token = tokens[user]
                request = request_bytes(port, f"/recom/v1/user/{user}?limit=1", token)
                _, body = await client.get(request)
                top = re.search(rb'"movie_id":"([0-9a-f-]+)"', body)
                assert top
                movie = uuid.UUID(top.group(1).decode())
                await conn.execute(
                    "INSERT INTO rating (user_id, movie_id, score, rated_at) VALUES ($1, $2, 7, now()) "
                    "ON CONFLICT (user_id, movie_id) DO UPDATE SET score = 7, deleted = false, "
                    "updated_at = clock_timestamp()",
                    user,
                    movie,
                )
                written = time.perf_counter()
                # Two consecutive answers without it: nginx alternates between the workers.
                clean = 0
                while clean < 2:
                    _, body = await client.get(request)
                    clean = clean + 1 if str(movie).encode() not in body else 0
                    if clean < 2:
                        await asyncio.sleep(0.005)
                delays.append(time.perf_counter() - written)
                # A tombstone, as the ratings consumer writes it, so the workers forget it too.
                await conn.execute(
                    "UPDATE rating SET deleted = true, updated_at = clock_timestamp() "
                    "WHERE user_id = $1 AND movie_id = $2",
                    user,
                    movie,
                )
    finally:
        await conn.close()
    delays.sort()
    print(
        f"freshness over {trials} ratings: median {statistics.median(delays) * 1000:.0f} ms, "
        f"p95 {delays[math.ceil(0.95 * len(delays)) - 1] * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms"
    )


@contextlib.asynccontextmanager
async def picks_subscriber(env: dict[str, str]) -> AsyncIterator[None]:
    """A queue bound to recom's picks events, as fastapi_ws's and notifications' are in a real
    deployment: without one every publish comes back unroutable and recom logs a warning per
    request, which is not what a deployment pays. Deleted (with what it holds) afterwards."""
    from contracts.broker import consumer_queue, dead_letter_queue, declare_topology, make_broker
    from contracts.events import RecommendationsGenerated

    broker = make_broker(env["RABBITMQ_URL"])
    await broker.connect()
    await declare_topology(broker, "bench.picks", [RecommendationsGenerated.routing_key])
    try:
        yield
    finally:
        for queue in (consumer_queue("bench.picks"), dead_letter_queue("bench.picks")):
            await (await broker.declare_queue(queue)).delete(if_unused=False, if_empty=False)
        await broker.stop()


async def main_async(args: argparse.Namespace) -> None:
    env = bench_env(args.suffix)
    bootstrap.ensure_vhost(env)
    bootstrap.ensure_nginx()
    async with picks_subscriber(env):
        await measure(args, env)


async def measure(args: argparse.Namespace, env: dict[str, str]) -> None:
    await bootstrap._ensure_databases(env, [f"recom{args.suffix}"])
    subprocess.run(  # noqa: ASYNC221 - set-up, before anything is measured
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "fastapi_recom/alembic.ini"), "upgrade", "head"],
        cwd=ROOT, env={**os.environ, **env}, check=True, capture_output=True,
    )  # fmt: skip
    if args.dataset == "ml100k":
        users = await load_movielens(env)
    elif args.skip_load:
        conn = await asyncpg.connect(dsn(env))
        users = [r[0] for r in await conn.fetch("SELECT DISTINCT user_id FROM rating LIMIT 2000")]
        await conn.close()
    else:
        users = await load_synthetic(env, args.ratings)

    recom_port, gateway_port = free_port(), free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="recom-bench-"))
    conf = bootstrap.render_nginx(
        {"GATEWAY_PORT": f"127.0.0.1:{gateway_port}", "RECOM_PORT": str(recom_port)}, run_dir
    )
    nginx = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [
            "nginx",
            "-p",
            str(run_dir / "nginx"),
            "-c",
            str(conf),
            "-e",
            "stderr",
            "-g",
            "daemon off;",
        ],
        stderr=subprocess.DEVNULL,
    )
    # A file, not a pipe: a full pipe would block the workers' logging.
    log = (run_dir / "recom.log").open("w")
    make = Tokens()
    tokens = {user: make(user) for user in users}
    started = time.perf_counter()
    recom = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [
            sys.executable, "-m", "uvicorn", "fastapi_recom.main:app", "--host", "127.0.0.1",
            "--port", str(recom_port), "--workers", str(args.workers), "--no-access-log",
            "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
        ],
        cwd=ROOT, env={**os.environ, **env}, stderr=log, stdout=log,
    )  # fmt: skip
    try:
        # Up when both workers answer: a few consecutive 200s through nginx.
        probe = request_bytes(gateway_port, "/recom/v1/general?limit=1", "x")
        ok = 0
        while ok < 6:
            if recom.poll() is not None:
                raise SystemExit(f"recom exited: {(run_dir / 'recom.log').read_text()[-2000:]}")
            try:
                async with Client("127.0.0.1", gateway_port) as client:
                    status, _ = await client.get(probe)
                ok = ok + 1 if status == 200 else 0
            except (OSError, asyncio.IncompleteReadError):
                ok = 0
            await asyncio.sleep(0.1)
        print(f"start-up until both workers serve: {time.perf_counter() - started:.1f} s")
        await asyncio.sleep(12)  # both loads finished and their temporaries returned
        print(
            f"recom RSS after load: {rss_mb(recom.pid):.0f} MB in total, workers "
            + ", ".join(f"{v:.0f} MB" for v in worker_rss(recom.pid))
        )

        requests = [
            request_bytes(gateway_port, f"/recom/v1/user/{user}?limit=10", tokens[user])
            for user in users
        ]
        random.Random(1).shuffle(requests)
        await drive(gateway_port, requests, 8, 3)  # warm-up
        print(f"load average before measuring: {os.getloadavg()[0]:.2f}")
        runs: dict[int, tuple[list[float], float]] = {}
        # Per level and run: requests/s, p99 ms, recom CPU us per request.
        figures: dict[int, list[tuple[float, float, float]]] = {c: [] for c in args.clients}
        # The 8-client level carries the latency targets, so it runs longest. With --repeat the
        # levels take turns, so a slow minute of the machine falls on all of them alike.
        for concurrency in [c for _ in range(args.repeat) for c in args.clients]:
            seconds = args.seconds / (4 if concurrency == 1 else 1 if concurrency == 8 else 2)
            cpu_before = cpu_seconds(recom.pid)
            nginx_before, own_before = sum(cpu_seconds(nginx.pid).values()), time.process_time()
            latencies, errors = await drive(gateway_port, requests, concurrency, seconds)
            own = time.process_time() - own_before
            nginx_used = sum(cpu_seconds(nginx.pid).values()) - nginx_before
            runs[concurrency] = (latencies, seconds)
            rate, p99 = report(f"{concurrency} concurrent clients", latencies, errors, seconds)
            cpu_after = cpu_seconds(recom.pid)
            # The children that did work: the workers, not multiprocessing's resource tracker.
            used = [cpu_after[w] - cpu_before.get(w, 0.0) for w in sorted(cpu_after)]
            used = [u for u in used if u > 0]
            n = len(latencies)
            print(
                f"{'':28} CPU per request: recom workers {sum(used) / n * 1e6:.0f} us (split "
                + " / ".join(f"{u / sum(used):.0%}" for u in used)
                + f"), nginx {nginx_used / n * 1e6:.0f} us, load generator {own / n * 1e6:.0f} us"
            )
            figures[concurrency].append((rate, p99, sum(used) / n * 1e6))
        if args.repeat > 1:
            for concurrency, measured in figures.items():
                rates, p99s, cpus = (sorted(column) for column in zip(*measured, strict=True))
                print(
                    f"{concurrency} clients, {len(measured)} runs: p99 median "
                    f"{statistics.median(p99s):.2f} ms ({p99s[0]:.2f}-{p99s[-1]:.2f}), "
                    f"{statistics.median(rates):.0f} req/s ({rates[0]:.0f}-{rates[-1]:.0f}), "
                    f"recom CPU {statistics.median(cpus):.0f} us per request "
                    f"({cpus[0]:.0f}-{cpus[-1]:.0f})"
                )
        print(
            f"recom RSS after the run: {rss_mb(recom.pid):.0f} MB in total, workers "
            + ", ".join(f"{v:.0f} MB" for v in worker_rss(recom.pid))
        )
        if args.trials:
            await freshness(gateway_port, env, tokens, args.trials)
        if args.plot:
            plot(runs, args.plot, args.dataset)
    finally:
        recom.send_signal(signal.SIGTERM)
        nginx.send_signal(signal.SIGQUIT)
        try:
            recom.wait(20)
        except subprocess.TimeoutExpired:
            recom.kill()
        nginx.wait(10)
        shutil.rmtree(run_dir, ignore_errors=True)


def plot(runs: dict[int, tuple[list[float], float]], prefix: Path, dataset: str) -> None:
    """Latency distribution at 8 clients and throughput against concurrent clients, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix.parent.mkdir(parents=True, exist_ok=True)
    latencies_ms = np.array(runs[8][0]) * 1000
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(
        latencies_ms,
        bins=list(
            np.logspace(np.log10(max(latencies_ms.min(), 0.5)), np.log10(latencies_ms.max()), 60)
        ),
    )
    ax.set_xscale("log")
    for p in (50, 95, 99):
        ax.axvline(np.percentile(latencies_ms, p), linestyle="--", color="grey")
        ax.text(np.percentile(latencies_ms, p), ax.get_ylim()[1] * 0.9, f"p{p}", rotation=90)
    ax.set_xlabel("GET /recom/v1/user/{id} through nginx, ms (8 clients)")
    ax.set_ylabel("requests")
    ax.set_title(f"Latency distribution ({dataset})")
    fig.tight_layout()
    fig.savefig(f"{prefix}_latency.png", dpi=120)
    clients = sorted(runs)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(clients, [len(runs[c][0]) / runs[c][1] for c in clients], marker="o", label="req/s")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests per second")
    ax2 = ax.twinx()
    p99 = [float(np.percentile(runs[c][0], 99)) * 1000 for c in clients]
    ax2.plot(clients, p99, marker="s", color="tab:red", label="p99 ms")
    ax2.set_ylabel("p99 latency, ms")
    ax.set_title(f"Throughput against concurrent clients ({dataset})")
    fig.tight_layout()
    fig.savefig(f"{prefix}_throughput.png", dpi=120)
    print(f"saved {prefix}_latency.png and {prefix}_throughput.png")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--dataset", choices=["ml100k", "synthetic"], default="ml100k")
    parser.add_argument("--ratings", type=int, default=10_000_000)
    parser.add_argument(
        "--suffix",
        help="database suffix; default $POSTGRES_DB_SUFFIX_bench_<dataset>, one database per set "
        "and per engineer",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--trials", type=int, default=20, help="ratings timed for freshness")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run the levels this many times, taking turns"
    )
    parser.add_argument(
        "--clients",
        type=lambda value: [int(part) for part in value.split(",")],
        default=[1, 8, 16, 32, 64],
        help="concurrency levels, comma-separated (default 1,8,16,32,64)",
    )
    parser.add_argument(
        "--plot", type=Path, help="save <PLOT>_latency.png and <PLOT>_throughput.png"
    )
    parser.add_argument(
        "--skip-load", action="store_true", help="reuse the synthetic set already loaded"
    )
    args = parser.parse_args()
    # The environment's suffix keeps two people's runs of the same set on this server apart.
    own = os.environ.get("POSTGRES_DB_SUFFIX", "")
    args.suffix = args.suffix or f"{own}_bench_{args.dataset}"
    print(f"machine: {machine()}")
    # uvloop, as bench.ingest's clients: the load generator shares the two cores it measures.
    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
