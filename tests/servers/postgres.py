"""A throw-away PostgreSQL cluster: initdb into a temp dir, trust auth, 127.0.0.1 only, no fsync.

The postmaster runs in the foreground as our child instead of through `pg_ctl start`: pg_ctl
daemonizes it, so it would outlive a killed test process, while a child wrapped in
`setpriv --pdeathsig` is shut down by the kernel. Readiness is checked by connecting, which is
what `pg_ctl -w` waits for too.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` account.
"""

import glob
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import sql

from .common import (
    LOCALHOST,
    START_TIMEOUT,
    ManagedServer,
    ServerStartError,
    chown_tree,
    free_port,
    is_root,
    register_running,
    require_binary,
    run_checked,
    spawn,
    tail,
    terminate,
    unregister_running,
    world_readable_tempdir,
)


def postgres_bindir() -> str:
    """Newest /usr/lib/postgresql/<version>/bin (Debian keeps server binaries off PATH)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda path: int(Path(path).parent.parent.name) if Path(path).parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return str(Path(candidates[-1]).parent)
    found = shutil.which("postgres")
    return str(Path(found).parent) if found else "/usr/lib/postgresql/15/bin"


class PostgresServer(ManagedServer):
    def __init__(
        self,
        port: int | None = None,
        *,
        dbname: str = "mailhub",
        user: str = "postgres",
        host: str = LOCALHOST,
    ) -> None:
        self.host = host
        self.port = port or 0
        self.dbname = dbname
        self.user = user  # database superuser, not the OS account
        self.base_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        # As root, initdb and postgres must run as an unprivileged OS account.
        self._os_user = "postgres" if is_root() else None

    @property
    def url(self) -> str:
        """DATABASE_URL of the database created at start (`dbname`)."""
        return self.url_for(self.dbname)

    def url_for(self, dbname: str) -> str:
        return f"postgres://{self.user}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str | None = None, **kwargs: object) -> psycopg.Connection:
        return psycopg.connect(self.url_for(dbname or self.dbname), **kwargs)  # type: ignore[arg-type]

    def start(self) -> None:
        if self.running:
            return
        bindir = postgres_bindir()
        postgres = require_binary(f"{bindir}/postgres", "postgresql")
        initdb = require_binary(f"{bindir}/initdb", "postgresql")
        started = time.monotonic()
        self.base_dir = base = world_readable_tempdir("mailhub-postgres-")
        data, sockets = base / "data", base / "sockets"
        data.mkdir(mode=0o700)
        sockets.mkdir(mode=0o755)
        if self._os_user:
            chown_tree(data, self._os_user)
            chown_tree(sockets, self._os_user)
        # HOME: the OS account's home may not be readable; LC_ALL: initdb must not depend on
        # the host's locale settings.
        env = {**os.environ, "HOME": str(base), "LC_ALL": "C", "LANG": "C"}
        try:
            run_checked(
                [
                    initdb,
                    "--pgdata",
                    str(data),
                    "--username",
                    self.user,
                    "--auth",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                    "--no-sync",
                    "--no-instructions",
                ],
                cwd=base,
                user=self._os_user,
                env=env,
            )
            self.port = self.port or free_port(self.host)
            self._process = spawn(
                [
                    postgres,
                    "-D",
                    str(data),
                    "-c",
                    f"listen_addresses={self.host}",
                    "-c",
                    f"port={self.port}",
                    "-c",
                    f"unix_socket_directories={sockets}",
                    # Durability is pointless for a database deleted at the end of the run.
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                output=base / "postgres.log",
                cwd=base,
                user=self._os_user,
                # SIGINT is PostgreSQL's "fast shutdown": it doesn't wait for clients.
                death_signal="INT",
                env=env,
            )
            register_running(self)
            self._wait_ready()
            self.create_database(self.dbname)
        except (ServerStartError, TimeoutError, psycopg.Error) as exc:
            log = self.log_text()
            self.stop()
            raise ServerStartError(f"PostgreSQL did not start: {exc}\n{log}") from exc
        self.startup_seconds = time.monotonic() - started

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ServerStartError(f"postgres exited with {self._process.returncode}")
            try:
                # "the database system is starting up" is also an OperationalError.
                with psycopg.connect(self.url_for("postgres"), connect_timeout=1):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name` (owned by the superuser) and return its URL."""
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def stop(self) -> None:
        if self._process is not None:
            terminate(self._process, signal.SIGINT)
            self._process = None
        unregister_running(self)
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def log_text(self) -> str:
        return tail(self.base_dir / "postgres.log", 200) if self.base_dir else ""
