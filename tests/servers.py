"""Throwaway PostgreSQL, Redis and S3-compatible servers for the test suite and the benchmarks.

`python -m tests.servers run -- pytest ...` starts them on free ports, exports PD_TEST_PG_URL,
PD_TEST_REDIS_URL and PD_TEST_S3_URL to the command, and stops them however the command ends. The S3
server is moto's, in server mode (a real HTTP server speaking the S3 API; a dev dependency). The binaries are looked
up on PATH and under /usr/lib/postgresql/*/bin, and installed with apt-get when absent and root.
PostgreSQL refuses to run as root, so as root it runs as the `postgres` user. `chromium()` finds (or installs)
Debian's Chromium the same way, for the Mini App's browser tests.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PG_URL_ENV = "PD_TEST_PG_URL"
REDIS_URL_ENV = "PD_TEST_REDIS_URL"
S3_URL_ENV = "PD_TEST_S3_URL"


class ServerUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_root() -> bool:
    return os.geteuid() == 0


def _apt_install(package: str) -> None:
    if not _is_root() or shutil.which("apt-get") is None:
        raise ServerUnavailable(f"{package} is not installed and cannot be installed here (not root or no apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, stdout=subprocess.DEVNULL)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise ServerUnavailable(f"apt-get install {package} failed: {done.stderr.strip()[-400:]}")


def find_binary(name: str, package: str, extra_globs: tuple[str, ...] = ()) -> str:
    def look() -> str | None:
        for pattern in extra_globs:
            for candidate in sorted(glob.glob(pattern), reverse=True):
                if os.access(candidate, os.X_OK):
                    return candidate
        return shutil.which(name)

    found = look()
    if found is None:
        _apt_install(package)
        found = look()
    if found is None:
        raise ServerUnavailable(f"{name} not found after installing {package}")
    return found


def chromium() -> str:
    """Debian's Chromium for the browser tests (Playwright drives it; its own browser download cannot work here)."""
    return find_binary("chromium", "chromium")


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerUnavailable(f"server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise ServerUnavailable(f"nothing listens on port {port} after {timeout}s")


class Postgres:
    """A private cluster: initdb into a temp dir, pg_ctl start/stop on a free port."""

    def __init__(self, root: Path | None = None, port: int | None = None, durable: bool = False) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="pd-pg-"))
        self.data = self.root / "data"
        self.port = port or free_port()
        self.durable = durable  # fsync on: for benchmarks that measure real commit latency
        bindir = Path(find_binary("pg_ctl", "postgresql", ("/usr/lib/postgresql/*/bin/pg_ctl",))).parent
        self.initdb, self.pg_ctl = str(bindir / "initdb"), str(bindir / "pg_ctl")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if _is_root():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, cwd="/")

    def start(self) -> Postgres:
        if not self.data.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            if _is_root():
                shutil.chown(self.root, "postgres", "postgres")
            done = self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                             "--no-sync")
            if done.returncode != 0:
                raise ServerUnavailable(f"initdb failed: {done.stderr.strip()[-400:]}")
        options = [f"-p {self.port}", f"-k {self.root}", "-c listen_addresses=127.0.0.1", "-c max_connections=200"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        done = self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "30",
                         "-o", " ".join(options), "start")
        if done.returncode != 0:
            log = (self.root / "server.log").read_text()[-600:] if (self.root / "server.log").exists() else ""
            raise ServerUnavailable(f"pg_ctl start failed: {done.stderr.strip()[-300:]} {log}")
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.data.exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.binary = find_binary("redis-server", "redis-server")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        _wait_port(self.port, 15, self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class S3:
    """moto's S3-compatible server on a free port (buckets live in its memory, gone when it stops)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3:
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            raise ServerUnavailable(f"moto is not installed ({exc}): pip install -e '.[dev]'") from None
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_port(self.port, 30, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def servers() -> Iterator[dict[str, str]]:
    """Start whatever can be had; the dict maps env var -> URL, plus *_ERROR for what could not."""
    env: dict[str, str] = {}
    pg: Postgres | None = None
    redis: Redis | None = None
    s3: S3 | None = None
    try:
        try:
            pg = Postgres().start()
            env[PG_URL_ENV] = pg.url
        except ServerUnavailable as exc:
            env[PG_URL_ENV + "_ERROR"] = str(exc)
        try:
            redis = Redis().start()
            env[REDIS_URL_ENV] = redis.url
        except ServerUnavailable as exc:
            env[REDIS_URL_ENV + "_ERROR"] = str(exc)
        try:
            s3 = S3().start()
            env[S3_URL_ENV] = s3.url
        except ServerUnavailable as exc:
            env[S3_URL_ENV + "_ERROR"] = str(exc)
        yield env
    finally:
        if s3 is not None:
            s3.stop()
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run"])
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        parser.error("give the command to run after --")
    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through servers(): both servers stop

    signal.signal(signal.SIGTERM, terminate)
    with servers() as env:
        for key, value in env.items():
            print(f"[servers] {key}={value}", file=sys.stderr)
        child = subprocess.Popen(argv, env={**os.environ, **env})
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            return child.wait()


if __name__ == "__main__":
    sys.exit(main())
