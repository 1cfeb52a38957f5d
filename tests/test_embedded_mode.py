"""The embedded mode of `make run`: web + background polling and sending with no Redis.

Starts `manage.py run_mailhub` (the web server plus a Celery worker with embedded beat on the
filesystem broker) on a fresh SQLite data dir, the way `make run` does, and checks that a message
appended to Dovecot becomes a case and its auto-reply reaches the SMTP server without anybody
running a command.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.servers import PASSWORD
from tests.servers.common import free_port, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


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
    product = subprocess.Popen(
        [sys.executable, "manage.py", "run_mailhub", "--addr", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
        [reply] = smtp_server.wait_for(1, timeout=60)
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
