"""The production web server: granian (an HTTP server in Rust) serving a WSGI app, a process per core
with four threads each, failed processes started again.

    python -m config.serve [module:app] [--host H] [--port P] [--workers N] [--access-log]

`make run`, the benchmarks and the live-server tests all start the app this way, so that they
measure and test the server that is deployed. The process becomes granian (same pid): its worker
processes are its children.
"""

import argparse
import os
import sys

THREADS = 4


def command(app: str, host: str, port: int, workers: int, *, access_log: bool = False) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--blocking-threads",
        str(THREADS),
        "--respawn-failed-workers",
        "--log-level",
        "warning",
        "--access-log" if access_log else "--no-access-log",
        app,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("app", nargs="?", default="config.wsgi:application")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args()
    argv = command(args.app, args.host, args.port, args.workers, access_log=args.access_log)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
