"""Ratings ingest benchmark: POSTs through nginx to UGC (confirmed publishes), then recom's drain.

Starts fastapi_ugc (uvicorn, 2 workers) and nginx on free ports, with databases and a RabbitMQ
vhost of its own (`scripts.bootstrap.bench_environment`: never the suite's). Phase 1: many
keep-alive clients POST /ugc/v1/ratings through nginx while recom is stopped, so the queue
holds every accepted rating; it reports accepted ratings/s and the POST latency. Phase 2:
starts fastapi_recom and times its consumer draining the queue into PostgreSQL.

    .venv/bin/python -m bench.ingest [--requests 20000] [--connections 256] [--ugc-workers 2]

A POST waits for the quorum queue's commit (a disk sync, tens of milliseconds here), so with
few clients the rate is bound by that wait rather than by CPU: 64 clients leave a third of
the two cores idle. 256 clients, the default, saturate them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench import machine

ROOT = Path(__file__).resolve().parents[1]


def start_uvicorn(
    app: str, port: int, workers: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--no-access-log", "--log-level", "warning",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
    )  # fmt: skip


async def wait_ready(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"{url} not ready within {timeout} s")


def start_nginx(
    env: dict[str, str], gateway: int, ugc: int, recom: int, run_dir: Path
) -> subprocess.Popen[bytes]:
    from scripts.bootstrap import render_nginx

    if shutil.which("nginx") is None:
        raise SystemExit("nginx is not installed (apt-get install nginx-light)")
    ports = {"GATEWAY_PORT": str(gateway), "UGC_PORT": str(ugc), "RECOM_PORT": str(recom)}
    conf = render_nginx({**env, **ports}, run_dir)
    return subprocess.Popen(
        ["nginx", "-p", str(conf.parent), "-c", conf.name, "-e", "stderr", "-g", "daemon off;"]
    )


class Client:
    """One keep-alive HTTP/1.1 connection; hand-written so the load generator stays cheap."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.writer.close()
            self.writer = None
        return status


def post_request(port: int, token: str, movie_id: uuid.UUID, score: int) -> bytes:
    body = f'{{"movie_id":"{movie_id}","score":{score}}}'.encode()
    return (
        f"POST /ugc/v1/ratings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def post_ratings(
    port: int, tokens: list[str], total: int, connections: int
) -> tuple[float, list[float], dict[int, int]]:
    requests = [
        post_request(port, tokens[i % len(tokens)], uuid.uuid4(), i % 10 + 1) for i in range(total)
    ]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        client = Client(port)
        while next_index < total:
            raw = requests[next_index]
            next_index += 1
            started = time.perf_counter()
            status = await client.request(raw)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - started, latencies, statuses


async def count_rows(engine: object, user_ids: list[uuid.UUID]) -> int:
    from sqlalchemy import func, select

    from fastapi_recom.models import Rating

    async with engine.connect() as conn:  # type: ignore[attr-defined]
        query = select(func.count()).select_from(Rating).where(Rating.user_id.in_(user_ids))
        return int((await conn.execute(query)).scalar_one())


async def delete_rows(engine: object, user_ids: list[uuid.UUID]) -> None:
    from sqlalchemy import delete

    from fastapi_recom.models import Rating

    async with engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(delete(Rating).where(Rating.user_id.in_(user_ids)))


async def wait_rows(
    engine: object, user_ids: list[uuid.UUID], at_least: int, *, interval: float
) -> int:
    while True:
        stored = await count_rows(engine, user_ids)
        if stored >= at_least:
            return stored
        await asyncio.sleep(interval)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants (uvicorn and nginx workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            with open(f"/proc/{current}/task/{current}/children") as children:
                pending.extend(int(child) for child in children.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def broker_pid() -> int | None:
    """The RabbitMQ server's Erlang VM, when it runs on this machine (its CPU is reported too:
    on this bench's machine nothing else uses the broker while it runs)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as comm:
                    if comm.read().strip() == "beam.smp":
                        return int(entry)
            except OSError:
                continue
    return None


def percentile(values: list[float], fraction: float) -> float:
    return statistics.quantiles(values, n=1000)[int(fraction * 1000) - 1]


async def main(env: dict[str, str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--ugc-workers", type=int, default=2)
    args = parser.parse_args()

    from contracts.db import make_engine
    from fastapi_recom.config import get_settings as recom_settings
    from tests.ratings_pipeline import RATINGS_QUEUE, empty_ratings_queues
    from tests.support import free_port, make_token

    print(f"machine: {machine()}")
    ugc_port, recom_port, gateway_port = free_port(), free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    engine = make_engine(recom_settings().database_url, pool_size=1)
    users = [uuid.uuid4() for _ in range(args.users)]
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as run_dir:
        try:
            async with empty_ratings_queues() as rabbit:
                processes.append(
                    start_uvicorn("fastapi_ugc.main:app", ugc_port, args.ugc_workers, env)
                )
                processes.append(
                    start_nginx(env, gateway_port, ugc_port, recom_port, Path(run_dir))
                )
                await wait_ready(f"http://127.0.0.1:{gateway_port}/ugc/ready")

                tokens = [make_token(user_id) for user_id in users]
                # Warm-up: connections, prepared keys, worker imports.
                await post_ratings(gateway_port, tokens, 500, args.connections)
                await rabbit.purge(RATINGS_QUEUE)

                load_before = os.getloadavg()[0]
                broker = broker_pid()
                pids = [p.pid for p in processes] + ([broker] if broker else [])
                cpu_before = [cpu_seconds(pid) for pid in pids] + [time.process_time()]
                elapsed, latencies, statuses = await post_ratings(
                    gateway_port, tokens, args.requests, args.connections
                )
                cpu_after = [cpu_seconds(pid) for pid in pids] + [time.process_time()]
                per_request = [
                    (after - before) / args.requests * 1e6
                    for before, after in zip(cpu_before, cpu_after, strict=True)
                ]
                accepted = statuses.get(202, 0)
                queued = await rabbit.depth(RATINGS_QUEUE)
                print(
                    f"POST /ugc/v1/ratings through nginx: {args.requests} requests, "
                    f"{args.connections} keep-alive connections, UGC {args.ugc_workers} workers, "
                    f"publisher confirms on"
                )
                print(f"  statuses: {dict(sorted(statuses.items()))}; in queue after: {queued}")
                print(f"  accepted: {accepted / elapsed:,.0f} ratings/s ({elapsed:.2f} s)")
                print(
                    f"  latency: p50 {percentile(latencies, 0.50) * 1000:.1f} ms, p95 {percentile(latencies, 0.95) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
                )
                print(
                    f"  load average 1 min: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
                )
                ugc_cpu, nginx_cpu, *rest = per_request
                broker_cpu = f"RabbitMQ {rest[0]:.0f} us, " if broker else ""
                print(
                    f"  CPU per request: UGC {ugc_cpu:.0f} us, nginx {nginx_cpu:.0f} us, "
                    f"{broker_cpu}load generator {rest[-1]:.0f} us"
                )

                # Phase 2: recom drains what phase 1 queued (the warm-up ratings were purged).
                processes[0].terminate()
                processes[0].wait(15)
                recom = start_uvicorn("fastapi_recom.main:app", recom_port, 1, env)
                processes.append(recom)
                await wait_rows(engine, users, 1, interval=0.02)
                first_rows = time.perf_counter()
                recom_cpu = cpu_seconds(recom.pid)
                stored = await wait_rows(engine, users, queued, interval=0.05)
                drain = time.perf_counter() - first_rows
                recom_cpu = cpu_seconds(recom.pid) - recom_cpu
                print(
                    f"recom consumer drain into PostgreSQL: {stored} ratings in {drain:.2f} s = "
                    f"{stored / drain:,.0f} ratings/s (batches of "
                    f"{recom_settings().ratings_batch_size}, prefetch {recom_settings().ratings_prefetch}); "
                    f"consumer CPU {recom_cpu / stored * 1e6:.0f} us per rating"
                )
        finally:
            for process in reversed(processes):
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(15)
                    except subprocess.TimeoutExpired:
                        process.kill()
            # recom loads every rating at start: a later run's drain would pay for this one's.
            await delete_rows(engine, users)
            await engine.dispose()


if __name__ == "__main__":
    import uvloop

    from scripts import bootstrap

    uvloop.run(main(bootstrap.prepare_bench()))
