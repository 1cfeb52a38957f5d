"""Helpers shared by the real-server fixtures: ports, binaries, temp dirs and child processes.

Every daemon is started as a direct child of the test process, in the foreground, so that:
- `stop()` can signal it and wait for it (no pid files, no daemonizing),
- it dies with the test process: it is wrapped in `setpriv --pdeathsig`, so the kernel signals it
  when the test process exits, even by SIGKILL or a crash in which no teardown runs,
- servers still running at interpreter exit are stopped by an atexit hook (a run interrupted
  before fixture teardown, or a class used outside pytest).
"""

import atexit
import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, Self

import pytest

LOCALHOST = "127.0.0.1"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
SETPRIV = "/usr/bin/setpriv"


class ServerStartError(RuntimeError):
    """A server did not come up; the message carries the tail of its log."""


def free_port(host: str = LOCALHOST) -> int:
    """An unprivileged TCP port free right now (the usual bind-to-0 race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(
    host: str,
    port: int,
    timeout: float = START_TIMEOUT,
    *,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until something accepts TCP connections on host:port.

    With `process`, give up as soon as that process exits: a daemon that died on a config error
    will never listen, and waiting the full timeout would only hide the error.
    """
    deadline = time.monotonic() + timeout
    while True:
        if port_is_open(host, port):
            return
        if process is not None and process.poll() is not None:
            raise ServerStartError(f"process {process.args!r} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.1f}s")
        time.sleep(0.01)


def require_binary(path_or_name: str, package: str) -> str:
    """Resolve a server binary, or skip the test (fail in CI) with the install hint.

    In CI (`CI=true`) a missing server must be a failure: a silently skipped integration test
    would make the pipeline green while testing nothing.
    """
    if os.sep in path_or_name:
        found = path_or_name if os.access(path_or_name, os.X_OK) else None
    else:
        found = shutil.which(path_or_name) or shutil.which(path_or_name, path="/usr/sbin:/sbin")
    if found:
        return found
    message = f"{path_or_name} not found: install it with `apt-get install {package}`"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def world_readable_tempdir(prefix: str) -> Path:
    """A fresh temp dir under /tmp that unprivileged daemon users can traverse.

    pytest's tmp_path lives below a 0o700 directory owned by the test user (root here), which
    Dovecot's and PostgreSQL's unprivileged processes cannot enter.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def is_root() -> bool:
    return os.geteuid() == 0


def current_user() -> tuple[str, str, int, int]:
    """(user name, group name, uid, gid) of the test process."""
    uid, gid = os.getuid(), os.getgid()
    return pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name, uid, gid


def user_ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def chown_tree(path: Path, user: str) -> None:
    uid, gid = user_ids(user)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.chown(name, uid, gid)


def _setpriv_user(user: str) -> list[str]:
    # Numeric ids: the user's primary group need not be named like the user (nobody/nogroup).
    uid, gid = user_ids(user)
    return [f"--reuid={uid}", f"--regid={gid}", "--init-groups"]


def spawn(
    argv: Sequence[str],
    *,
    output: Path,
    cwd: Path,
    user: str | None = None,
    death_signal: str = "TERM",
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a foreground daemon as a child that dies with the test process.

    `setpriv --pdeathsig` (util-linux) makes the kernel send `death_signal` to the daemon when
    the *thread* that spawned it exits: call this from the main thread (pytest fixtures do), not
    from a short-lived worker thread. It also drops privileges to `user` before arming the
    signal: changing credentials after prctl(PR_SET_PDEATHSIG) would clear it. A new session keeps
    the terminal's Ctrl-C away from the daemons (pytest's teardown stops them in order) and makes
    the whole process group killable at once.
    """
    prefix: list[str] = []
    if os.access(SETPRIV, os.X_OK):
        prefix = [SETPRIV, f"--pdeathsig={death_signal}"]
        if user is not None:
            prefix += _setpriv_user(user)
        prefix.append("--")
    elif user is not None:
        raise ServerStartError(f"{SETPRIV} (util-linux) is needed to run a server as {user}")
    with output.open("ab") as out:
        return subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


def run_checked(
    argv: Sequence[str], *, cwd: Path, user: str | None = None, env: dict[str, str] | None = None
) -> str:
    """Run a one-shot command (optionally as `user`), raising with its output on failure."""
    prefix = [SETPRIV, *_setpriv_user(user), "--"] if user else []
    result = subprocess.run(
        [*prefix, *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise ServerStartError(
            f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def terminate(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT
) -> None:
    """Stop a daemon with `sig`, then SIGKILL its whole process group if it hangs.

    The group kill also reaps workers the daemon forked (Dovecot's login/imap processes,
    PostgreSQL backends) should the master itself be stuck.
    """
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        # The group id is the daemon's pid (start_new_session). Only killed on this path: once
        # the master has been reaped its pid (and so the group id) may be reused by anyone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


def kill_group(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGKILL a daemon and every process of its group at once, then reap it.

    For throw-away servers whose state is deleted right after: no graceful shutdown to wait for.
    Safe against pid reuse because the leader is not reaped yet, so its pid still names the group.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


class Stoppable(Protocol):
    def stop(self) -> None: ...


_running: dict[int, Stoppable] = {}
_running_lock = threading.Lock()


def register_running(server: Stoppable) -> None:
    with _running_lock:
        _running[id(server)] = server


def unregister_running(server: Stoppable) -> None:
    with _running_lock:
        _running.pop(id(server), None)


@atexit.register
def _stop_leftovers() -> None:
    with _running_lock:
        servers = list(_running.values())
    for server in servers:
        with contextlib.suppress(Exception):  # best effort: the interpreter is exiting
            server.stop()


class ManagedServer:
    """start()/stop() plus the context-manager protocol and the atexit safety net."""

    startup_seconds: float = 0.0  # duration of the last start(), for diagnostics
    _process: subprocess.Popen[bytes] | None = None  # the daemon, for process-based servers

    @property
    def pid(self) -> int | None:
        """The daemon's pid, which is also its process group id (see spawn())."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group: what a daemon left running, if anything."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesized command name: state, ppid, pgrp, ...
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members
