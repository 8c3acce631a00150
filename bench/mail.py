"""Benchmark: 10,000 digests from recom's answer event to a local SMTP sink (aiosmtpd).

Runs notifications_service as a real uvicorn process against a database and broker vhost of
its own (`scripts.bootstrap.bench_environment`; its two tables are emptied first), reserves one digest per
viewer, then plays recom: publishes one `RecommendationsGenerated(trigger="digest")` per
viewer and times each from just before its publish to the sink's 250.

    .venv/bin/python -m bench.mail [--viewers 10000] [--connections 4] [--rate 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections import Counter
from pathlib import Path

from scripts import bootstrap

bootstrap.ensure_env_file()
for _name, _value in bootstrap.bench_environment(bootstrap.load_env()).items():
    os.environ.setdefault(_name, _value)

from sqlalchemy import insert, text  # noqa: E402

from bench import machine  # noqa: E402
from contracts.broker import make_broker, publish_event  # noqa: E402
from contracts.db import make_engine, make_sessionmaker  # noqa: E402
from contracts.events import RecommendationsGenerated, RecommendedItem  # noqa: E402
from notifications_service import service  # noqa: E402
from notifications_service.config import get_settings  # noqa: E402
from notifications_service.models import DigestFrequency, Recipient  # noqa: E402
from tests.notifications.sink import SmtpSink  # noqa: E402
from tests.support import ServiceProcess, wait_for  # noqa: E402

ITEMS = [
    RecommendedItem(movie_id=uuid.uuid4(), title=title, score=9.0 - i, reason="Liked by your peers")
    for i, title in enumerate(["Heat", "Ronin", "Alien", "Brazil", "Fargo"])
]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far: a figure the machine's other load does not skew."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def prepare(viewers: int) -> list[tuple[uuid.UUID, str]]:
    settings = get_settings()
    engine = make_engine(settings.database_url, pool_size=2)
    sessionmaker = make_sessionmaker(engine)
    users = [(uuid.uuid4(), f"bench-{n}@example.com") for n in range(viewers)]
    async with sessionmaker() as session:
        await session.execute(text("TRUNCATE delivery, recipient"))
        await session.execute(
            insert(Recipient),
            [
                {"user_id": u, "email": e, "full_name": "Bench", "is_verified": True}
                for u, e in users
            ],
        )
        await session.commit()
        reserved = await service.reserve_digests(
            session, frequency=DigestFrequency.DAILY, period="Dbench", limit=viewers
        )
    await engine.dispose()
    assert len(reserved) == viewers, reserved
    return users


async def run(viewers: int, connections: int, publishers: int, rate: float) -> None:
    print(f"machine: {machine()}")
    print("load average at the start (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    print(f"database: {get_settings().database_url.rsplit('/', 1)[1]}")
    users = await prepare(viewers)
    sink = SmtpSink(keep_messages=False)
    sink.start()
    process = ServiceProcess(
        "notifications_service.main:app",
        "notifications",
        env={
            "SMTP_PORT": str(sink.port),
            "SMTP_CONNECTIONS": str(connections),
            "DIGEST_SCHEDULER_SECONDS": "0",
            "LOG_LEVEL": "WARNING",
        },
    )
    await process.start(ready_timeout=60)
    broker = make_broker(os.environ["RABBITMQ_URL"])
    await broker.connect()
    published: dict[str, float] = {}
    queue: asyncio.Queue[tuple[uuid.UUID, str]] = asyncio.Queue()
    for user in users:
        queue.put_nowait(user)

    async def publisher() -> None:
        while not queue.empty():
            user_id, email = queue.get_nowait()
            if rate:
                # Paced: the n-th event leaves at started + n / rate, whatever the publisher.
                await asyncio.sleep(
                    max(0.0, started + (viewers - queue.qsize()) / rate - time.perf_counter())
                )
            event = RecommendationsGenerated(
                user_id=user_id, items=ITEMS, strategy="user-user-cosine", trigger="digest"
            )
            published[email] = time.perf_counter()
            await publish_event(broker, event)

    assert process.proc is not None
    cpu_at_start = cpu_seconds(process.proc.pid)
    try:
        started = time.perf_counter()
        await asyncio.gather(*(publisher() for _ in range(publishers)))
        publish_done = time.perf_counter()
        await wait_for(lambda: _all_accepted(sink, viewers), timeout=600, interval=0.1)
        finished = time.perf_counter()
        assert process.proc is not None
        service_cpu = cpu_seconds(process.proc.pid) - cpu_at_start
    finally:
        await broker.stop()
        process.stop()
        sink.stop()

    latencies = [r.at - published[r.recipient] for r in sink.received]
    copies = Counter(r.recipient for r in sink.received)
    print(
        f"digests published: {viewers} by {publishers} publishers in {publish_done - started:.2f} s"
    )
    print(
        f"accepted by SMTP: {len(sink.received)}, duplicates: {sum(c - 1 for c in copies.values())}"
    )
    print(f"SMTP connections: {connections}")
    print(
        f"service CPU: {service_cpu:.1f} s, {service_cpu / viewers * 1000:.2f} ms per e-mail "
        f"(consume, render, store, send, record)"
    )
    print("load average at the end (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    print(f"wall time first publish to last accept: {finished - started:.2f} s")
    print(
        f"throughput: {len(sink.received) / (max(r.at for r in sink.received) - started):.0f} e-mails/s"
    )
    print(
        "event to SMTP accept: "
        f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {percentile(latencies, 0.95) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )


async def _all_accepted(sink: SmtpSink, count: int) -> bool:
    return len(sink.received) >= count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--viewers", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--publishers", type=int, default=16)
    parser.add_argument(
        "--rate", type=float, default=0, help="events per second; 0 publishes as fast as it can"
    )
    args = parser.parse_args()
    bootstrap.prepare_bench()
    asyncio.run(run(args.viewers, args.connections, args.publishers, args.rate))


if __name__ == "__main__":
    main()
