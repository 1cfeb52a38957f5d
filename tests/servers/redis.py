"""A throw-away redis-server on 127.0.0.1 without persistence."""

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from .common import (
    LOCALHOST,
    START_TIMEOUT,
    ManagedServer,
    ServerStartError,
    free_port,
    register_running,
    require_binary,
    spawn,
    tail,
    terminate,
    unregister_running,
    world_readable_tempdir,
)

REDIS_SERVER = "/usr/bin/redis-server"


class RedisServer(ManagedServer):
    def __init__(self, port: int | None = None, *, host: str = LOCALHOST) -> None:
        self.host = host
        self.port = port or 0
        self.base_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, socket_timeout=5)

    def start(self) -> None:
        if self.running:
            return
        binary = require_binary(REDIS_SERVER, "redis-server")
        started = time.monotonic()
        if self.base_dir is None:
            self.base_dir = world_readable_tempdir("mailhub-redis-")
        self.port = self.port or free_port(self.host)  # a restart keeps the port
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.base_dir),
            "--daemonize",
            "no",
            "--loglevel",
            "notice",
        ]
        self._process = spawn(argv, output=self.base_dir / "redis.log", cwd=self.base_dir)
        register_running(self)
        try:
            self._wait_ready()
        except (ServerStartError, TimeoutError) as exc:
            log = self.log_text()
            self.stop()
            raise ServerStartError(f"redis-server did not start: {exc}\n{log}") from exc
        self.startup_seconds = time.monotonic() - started

    def _wait_ready(self) -> None:
        # The port opens before the dataset is loaded; only PING tells it serves commands.
        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise ServerStartError(f"redis-server exited with {self._process.returncode}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on port {self.port} not ready after {START_TIMEOUT}s")
                time.sleep(0.01)
        finally:
            client.close()

    def restart(self) -> None:
        """SIGTERM, then start again on the same port (clients see a dropped connection)."""
        self._shutdown()
        self.start()

    def _shutdown(self) -> None:
        if self._process is not None:
            terminate(self._process, signal.SIGTERM)
            self._process = None
        unregister_running(self)

    def stop(self) -> None:
        self._shutdown()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def flushall(self) -> None:
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()

    def log_text(self) -> str:
        return tail(self.base_dir / "redis.log", 200) if self.base_dir else ""
