"""The embedded mode of `make run`: web + background polling and sending with no Redis.

Starts `manage.py run_mailhub` (the web server plus a Celery worker with embedded beat on the
filesystem broker) on a fresh SQLite data dir, the way `make run` does, and checks that a message
appended to Dovecot becomes a case and its auto-reply reaches the SMTP server without anybody
running a command.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.servers import PASSWORD
from tests.servers.common import free_port, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def counts(env: dict, label: str) -> str:
    code = (
        "from mailboxes.models import Email; from processing.models import Case; "
        "from autoresponse.models import AutoReply; "
        f"print('COUNTS', Email.objects.filter(mailbox__label={label!r}).count(), "
        f"Case.objects.filter(mailbox__label={label!r}).count(), "
        "AutoReply.objects.filter(status='sent').count())"
    )
    lines = [line for line in manage(env, "shell", "-c", code).splitlines() if line.startswith("COUNTS")]
    return lines[-1].removeprefix("COUNTS ")


def test_make_run_mode_polls_processes_and_answers_in_the_background(dovecot_server, smtp_server):
    data_dir = tempfile.mkdtemp(prefix="mailhub-embedded-")
    env = embedded_env(data_dir) | {"MAILHUB_DISPATCH_EVERY": "1"}
    manage(env, "migrate", "--noinput", "-v", "0")
    user = dovecot_server.new_account()
    manage(
        env,
        "shell",
        "-c",
        "from mailboxes.models import Mailbox; "
        "from autoresponse.models import AutoResponseRule, EmailTemplate; "
        f"m = Mailbox.objects.create(label='Support', email='support@acme.example', imap_host='127.0.0.1', "
        f"imap_port={dovecot_server.port}, imap_security='none', imap_username={user!r}, "
        f"imap_password={PASSWORD!r}, smtp_host='127.0.0.1', smtp_port={smtp_server.port}, "
        "smtp_security='none', processing_action='case', poll_interval=1, history_import='none'); "
        "t = EmailTemplate.objects.create(name='ack', subject='[{{ case.reference }}] received', "
        "text_body='Thanks'); AutoResponseRule.objects.create(mailbox=m, name='ack', template=t)",
    )
    port = free_port()
    console = Path(data_dir) / "console.log"
    product = subprocess.Popen(
        [sys.executable, "manage.py", "run_mailhub", "--addr", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=console.open("wb"),
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=10) as page:
            assert page.status == 200
        deadline = time.monotonic() + 60
        while counts(env, "Support") != "0 0 0":  # the first poll records the (empty) folder
            assert time.monotonic() < deadline
            time.sleep(0.5)
        time.sleep(3)
        dovecot_server.append(
            user, b"From: Ann <ann@customer.example>\r\nSubject: Help\r\nMessage-ID: <h1@c>\r\n\r\nPlease\r\n"
        )
        try:
            [reply] = smtp_server.wait_for(1, timeout=60)
        except AssertionError as exc:  # say what the product was doing (its console)
            raise AssertionError(f"{exc}; console:\n{console.read_text()[-4000:]}") from exc
        assert reply.message["Subject"] == "[#1001] received"
        assert list(reply.rcpt_tos) == ["ann@customer.example"]
        assert counts(env, "Support") == "1 1 1"
        assert processes_mentioning(data_dir)  # the worker runs, in its own process group
    finally:
        os.killpg(product.pid, signal.SIGTERM)
        try:
            product.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(product.pid, signal.SIGKILL)
    assert wait_until_gone(data_dir) == []  # no worker left polling after `make run` stops
    # A quiet console: the poll that found the message, not the dispatcher every second nor the
    # empty polls before it.
    lines = console.read_text().splitlines()
    assert len([line for line in lines if "poll mailbox=" in line and " new=1 " in line]) == 1
    assert [line for line in lines if "No hostname was supplied" in line] == []
    assert [line for line in lines if " new=0 history=0 duplicates=0 " in line] == []
    assert [line for line in lines if "dispatch_due_polls" in line] == []


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions `text` (the data dir is in the worker's argv)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found


def wait_until_gone(text: str, timeout: float = 45) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def embedded_env(data_dir: str) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DATABASE_URL"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "mailhub.settings",
            "SECRET_KEY": "embedded-test-secret",
            "MAILHUB_ENCRYPTION_KEYS": "3q1cXn7Wl3oH6f3m8m4zK8H4m0QO4t8s6QnXb7q2J2U=",
            "MAILHUB_DATA_DIR": data_dir,
            "REDIS_URL": "",
        }
    )
    env.pop("CELERY_BROKER_URL", None)
    return env


def test_killed_run_mailhub_takes_its_worker_with_it():
    # SIGKILL leaves run_mailhub no chance to clean up: the kernel's parent-death signal does.
    data_dir = tempfile.mkdtemp(prefix="mailhub-embedded-kill-")
    env = embedded_env(data_dir)
    manage(env, "migrate", "--noinput", "-v", "0")
    port = free_port()
    product = subprocess.Popen(
        [sys.executable, "manage.py", "run_mailhub", "--addr", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port("127.0.0.1", port, timeout=60)
    deadline = time.monotonic() + 30
    while not processes_mentioning(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(data_dir)
    product.kill()
    product.wait(10)
    assert wait_until_gone(data_dir) == []


# --- stopping: every signal stops the whole run, within seconds, and nothing is left ---------


def start_product(env: dict, data_dir: str, *args: str) -> subprocess.Popen:
    """run_mailhub as `make run` starts it, in its own session so that a test can send SIGINT to
    its process group the way a terminal's Ctrl-C does (to the foreground group, not the worker's)."""
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_mailhub",
            "--addr",
            "127.0.0.1",
            "--port",
            str(free_port()),
            *args,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(Path(data_dir) / "console.log", "wb"),
        start_new_session=True,
    )


def worker_group(data_dir: str, timeout: float = 60) -> int:
    """The worker's process group (its main process's pid), from the lock file run_mailhub writes,
    once the main process, its pool (2) and its beat process run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = (
            (Path(data_dir) / "run_mailhub.lock").read_text()
            if (Path(data_dir) / "run_mailhub.lock").exists()
            else ""
        )
        if "worker=" in text:
            pgid = int(text.split("worker=")[1].split()[0])
            if len(group_members(pgid)) >= 4:
                return pgid
        time.sleep(0.2)
    raise AssertionError(f"no worker started in {data_dir}")


def idle_pid(data_dir: str) -> int:
    """The IDLE supervisor's pid (run_mailhub's third child), from the lock file."""
    text = (Path(data_dir) / "run_mailhub.lock").read_text()
    return int(text.split("idle=")[1].split()[0])


def test_run_mailhub_starts_the_idle_supervisor_and_stops_it(run_env):
    env, data_dir = run_env
    product = start_product(env, data_dir)
    worker_group(data_dir)
    supervisor = idle_pid(data_dir)
    assert "run_idle_supervisor" in Path(f"/proc/{supervisor}/cmdline").read_bytes().decode()
    product.terminate()
    stopped_within(product, 10)
    assert supervisor not in processes_of_run(data_dir)
    assert not Path(f"/proc/{supervisor}").exists() or "Z" in Path(f"/proc/{supervisor}/stat").read_text()


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group: these may still poll or send."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


def processes_of_run(data_dir: str) -> list[int]:
    """Live processes of this run however they were started: the data dir is in their environment
    (inherited by every child, also one that left the group) or on their command line."""
    marker = f"MAILHUB_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                environ = (entry / "environ").read_bytes().split(b"\0")
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if state != "Z" and (marker in environ or data_dir.encode() in cmdline):
                found.append(int(entry.name))
    return found


@pytest.fixture
def run_env():
    data_dir = tempfile.mkdtemp(prefix="mailhub-embedded-stop-")
    env = embedded_env(data_dir) | {"MAILHUB_DISPATCH_EVERY": "1", "MAILHUB_NETWORK_TIMEOUT": "300"}
    manage(env, "migrate", "--noinput", "-v", "0")
    yield env, data_dir
    for pid in processes_of_run(data_dir):  # a failed test must not leave a worker polling
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def silent_imap_server():
    """Accepts IMAP connections and never sends the greeting: a poll hangs in its task (until the
    network timeout), so a warm shutdown has a running task to wait for. Yields (port, accepted)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = threading.Event()
    connections = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connections.append(listener.accept()[0])
                accepted.set()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], accepted
    listener.close()
    for connection in connections:
        connection.close()


def add_hanging_mailbox(env: dict, port: int) -> None:
    manage(
        env,
        "shell",
        "-c",
        "from mailboxes.models import Mailbox; "
        "Mailbox.objects.create(label='Hang', email='hang@acme.example', imap_host='127.0.0.1', "
        f"imap_port={port}, imap_security='none', imap_username='u', imap_password='p', "
        "smtp_host='127.0.0.1', smtp_port=1, smtp_security='none', poll_interval=1, history_import='none')",
    )


def stopped_within(product: subprocess.Popen, seconds: float) -> float:
    started = time.monotonic()
    product.wait(seconds + 30)  # a hang fails below with its duration instead of here
    return time.monotonic() - started


def test_one_ctrl_c_stops_the_whole_run_within_seconds(run_env):
    env, data_dir = run_env
    product = start_product(env, data_dir)
    pgid = worker_group(data_dir)
    os.killpg(product.pid, signal.SIGINT)  # Ctrl-C: the foreground group, not the worker's
    took = stopped_within(product, 10)
    assert (product.returncode, group_members(pgid), processes_of_run(data_dir)) == (
        128 + signal.SIGINT,
        [],
        [],
    )
    assert took < 10  # warm shutdown, then the group is killed after --stop-timeout (5 s)


def test_sigterm_stops_the_whole_run_within_seconds(run_env):
    env, data_dir = run_env
    product = start_product(env, data_dir)
    pgid = worker_group(data_dir)
    product.terminate()  # a service manager: run_mailhub alone
    took = stopped_within(product, 10)
    assert (product.returncode, group_members(pgid), processes_of_run(data_dir)) == (
        128 + signal.SIGTERM,
        [],
        [],
    )
    assert took < 10


def test_a_running_poll_is_killed_after_the_stop_timeout(run_env, silent_imap_server):
    env, data_dir = run_env
    port, accepted = silent_imap_server
    add_hanging_mailbox(env, port)
    product = start_product(env, data_dir, "--stop-timeout", "3")
    pgid = worker_group(data_dir)
    assert accepted.wait(60)  # a poll task is now running, for up to 300 s
    os.killpg(product.pid, signal.SIGINT)
    took = stopped_within(product, 8)
    assert (group_members(pgid), processes_of_run(data_dir)) == ([], [])
    assert 3 <= took < 8  # waited for the warm shutdown, not for the task


def test_two_ctrl_c_leave_no_process(run_env, silent_imap_server):
    env, data_dir = run_env
    port, accepted = silent_imap_server
    add_hanging_mailbox(env, port)
    product = start_product(env, data_dir, "--stop-timeout", "120")
    pgid = worker_group(data_dir)
    assert accepted.wait(60)
    os.killpg(product.pid, signal.SIGINT)
    time.sleep(1.5)
    assert product.poll() is None  # waiting for the running poll (warm shutdown)
    os.killpg(product.pid, signal.SIGINT)  # the impatient second Ctrl-C
    took = stopped_within(product, 5)
    assert (product.returncode, group_members(pgid), processes_of_run(data_dir)) == (
        128 + signal.SIGINT,
        [],
        [],
    )
    assert took < 5  # the group was killed at once, not after the 120 s


def test_a_second_run_on_the_same_data_dir_refuses_to_start(run_env):
    env, data_dir = run_env
    first = start_product(env, data_dir)
    pgid = worker_group(data_dir)
    second = subprocess.run(
        [sys.executable, "manage.py", "run_mailhub", "--port", str(free_port())],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert (
        f"mailhub is already running on {data_dir} "
        f"(run_mailhub={first.pid} worker={pgid} idle={idle_pid(data_dir)})" in second.stderr
    )
    # No second worker nor supervisor.
    assert sorted(processes_of_run(data_dir)) == sorted([first.pid, *group_members(pgid), idle_pid(data_dir)])
    os.killpg(first.pid, signal.SIGINT)
    first.wait(30)
