"""Chat socket fan-out: N sockets through nginx, M pushed recommendations, publish-to-frame latency.

Run: .venv/bin/python -m bench.ws [--sockets 1000] [--messages 10000] [--rate 100] [--processes 2]
It starts its own fastapi_ws processes and an nginx in front of them, on free ports, against the
test environment (own databases, RabbitMQ vhost and Redis db), and stops them all at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench import machine
from contracts.broker import make_broker, publish_event
from contracts.events import RecommendationsGenerated, RecommendedItem
from fastapi_ws.consumers import declare_ws_topology
from scripts import bootstrap
from tests.support import ServiceProcess, free_port, make_token

ROOT = Path(__file__).resolve().parents[1]


def nginx_config(directory: Path, port: int, upstreams: list[int]) -> Path:
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in upstreams)
    user = "user root;\n" if os.geteuid() == 0 else ""
    config = directory / "nginx.conf"
    config.write_text(
        f"""{user}worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}
    upstream ws {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location /ws/ {{
            proxy_pass http://ws;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 75s;
            proxy_send_timeout 75s;
        }}
    }}
}}
"""
    )
    return config


async def start_services(processes: int, extra_env: dict[str, str]) -> list[ServiceProcess]:
    procs = [
        ServiceProcess("fastapi_ws.main:app", "ws", env={"LOG_LEVEL": "WARNING", **extra_env})
        for _ in range(processes)
    ]
    await asyncio.gather(*(p.start(ready_timeout=90) for p in procs))
    return procs


class Recorder:
    """Publish-to-frame latencies; `done` is set once every expected frame arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.latencies: list[float] = []
        self.done = asyncio.Event()

    def add(self, seconds: float) -> None:
        self.latencies.append(seconds)
        if len(self.latencies) >= self.expected:
            self.done.set()


class Tab:
    """One viewer's socket: answers pings, records the latency of every recommendations frame."""

    def __init__(self, ws: ClientConnection, recorder: Recorder) -> None:
        self.ws = ws
        self.recorder = recorder
        self.task = asyncio.create_task(self.read())

    async def read(self) -> None:
        ws = self.ws
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                received = time.time()
                frame = json.loads(raw)
                if frame["type"] == "ping":
                    await ws.send('{"type": "pong"}')
                elif frame["type"] == "message" and frame["kind"] == "recommendations":
                    sent = float(frame["items"][0]["title"].split("@", 1)[1])
                    self.recorder.add(received - sent)


async def open_tab(url: str, token: str, recorder: Recorder) -> Tab:
    ws = await connect(url, ping_interval=None, open_timeout=30, max_queue=None)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    history = json.loads(await ws.recv())
    assert history["type"] == "history", history
    return Tab(ws, recorder)


async def run(args: argparse.Namespace, env: dict[str, str]) -> None:
    extra = {}
    if args.prefetch:
        extra["CHAT_CONSUMER_PREFETCH"] = str(args.prefetch)
    procs = await start_services(args.processes, extra)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ws-"))
    port = free_port()
    config = nginx_config(workdir, port, [p.port for p in procs])
    nginx = await asyncio.create_subprocess_exec(
        "nginx", "-p", str(workdir), "-c", str(config), "-g", "daemon off;", cwd=workdir
    )
    broker = make_broker(env["RABBITMQ_URL"])
    tabs: list[Tab] = []
    try:
        await asyncio.sleep(0.5)
        url = f"ws://127.0.0.1:{port}/ws/v1/chat/connect"
        users = [uuid.uuid4() for _ in range(args.sockets)]
        recorder = Recorder(args.messages)
        gate = asyncio.Semaphore(50)

        # Parsing the PEM is the slow part of signing; do it once, not per viewer.
        key = serialization.load_pem_private_key(
            env["JWT_PRIVATE_KEY"].replace("\\n", "\n").encode(), password=None
        )
        tokens = [
            make_token(u, lifetime=timedelta(minutes=30), key=key)  # type: ignore[arg-type]
            for u in users
        ]

        async def open_one(token: str) -> Tab:
            async with gate:
                return await open_tab(url, token, recorder)

        started = time.perf_counter()
        tabs = await asyncio.gather(*(open_one(t) for t in tokens))
        connect_s = time.perf_counter() - started
        print(f"{len(tabs)} sockets open through nginx in {connect_s:.1f} s")

        await broker.connect()
        await declare_ws_topology(broker)
        interval = 1.0 / args.rate
        started = time.perf_counter()
        publishing = asyncio.Semaphore(64)
        pending: set[asyncio.Task[None]] = set()

        async def publish_one(n: int) -> None:
            async with publishing:
                event = RecommendationsGenerated(
                    user_id=users[n % len(users)],
                    items=[
                        RecommendedItem(
                            movie_id=uuid.uuid4(), title=f"film {n}@{time.time()}", score=9.0
                        )
                    ],
                    strategy="bench",
                    trigger="request",
                )
                await publish_event(broker, event)

        for n in range(args.messages):
            # Paced: a fixed rate, not a burst, so the figure is latency, not queueing.
            delay = started + n * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(publish_one(n))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        publish_s = time.perf_counter() - started

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recorder.done.wait(), args.drain_timeout)
        total_s = time.perf_counter() - started

        ms = np.array(recorder.latencies) * 1000
        print(
            f"machine: {machine()}; nginx in front of {args.processes} fastapi_ws "
            f"processes, consumer prefetch {args.prefetch or 'default'}"
        )
        print(
            f"published {args.messages} events at {args.rate}/s target "
            f"({args.messages / publish_s:.0f}/s achieved) to {args.sockets} sockets"
        )
        print(f"delivered {len(recorder.latencies)} / {args.messages} frames in {total_s:.1f} s")
        if len(ms):
            p50, p95, p99 = np.percentile(ms, [50, 95, 99])
            print(
                f"publish -> frame latency: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
                f"p99 {p99:.1f} ms, max {ms.max():.1f} ms"
            )
    finally:
        for tab in tabs:
            with contextlib.suppress(Exception):
                await tab.ws.close()
        with contextlib.suppress(Exception):
            await broker.stop()
        nginx.terminate()
        await nginx.wait()
        for proc in procs:
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0, help="events published per second")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=0, help="override CHAT_CONSUMER_PREFETCH")
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    args = parser.parse_args()
    env = bootstrap.prepare_bench()
    asyncio.run(run(args, env))


if __name__ == "__main__":
    main()
