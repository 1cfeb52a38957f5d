"""A production-shaped mailhub on one machine: PostgreSQL, Redis, Celery beat and N workers as
separate processes, real Dovecot mailboxes and a recording SMTP server. Used by the scale-out
test and by `bench/scale.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.servers import PASSWORD, DovecotServer, PostgresServer, RecordingSmtpServer, RedisServer

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class MailboxPlan:
    label: str
    action: str  # none | lead | case
    with_rule: bool


# Mixed actions and rules: 4 case mailboxes answering with an auto-response, 3 lead, 3 none.
DEFAULT_PLANS = (
    [MailboxPlan(f"case-{i}", "case", True) for i in range(4)]
    + [MailboxPlan(f"lead-{i}", "lead", False) for i in range(3)]
    + [MailboxPlan(f"none-{i}", "none", False) for i in range(3)]
)
REPLY_EVERY = 10  # every 10th message answers an earlier one of the same sender


def scale_message(mailbox: str, n: int) -> bytes:
    """Message n of a mailbox; every REPLY_EVERY-th one is a reply (same sender) to message n-1."""
    is_reply = n % REPLY_EVERY == REPLY_EVERY - 1
    sender_n = n - 1 if is_reply else n
    headers = (
        f"From: Customer {sender_n} <c{sender_n}.{mailbox}@customer.example>\r\n"
        f"To: {mailbox}@acme.example\r\n"
        f"Subject: {'Re: ' if is_reply else ''}Request {sender_n} to {mailbox}\r\n"
        f"Message-ID: <{mailbox}-{n}@customer.example>\r\n"
        "Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
    )
    if is_reply:
        headers += f"In-Reply-To: <{mailbox}-{n - 1}@customer.example>\r\n"
    return (headers + f"\r\nHello, this is message {n}.\r\n").encode()


def expected_counts(plans: list[MailboxPlan], per_mailbox: int) -> dict[str, int]:
    replies = sum(1 for n in range(per_mailbox) if n % REPLY_EVERY == REPLY_EVERY - 1)
    originals = per_mailbox - replies
    cases = sum(originals for plan in plans if plan.action == "case")
    return {
        "emails": len(plans) * per_mailbox,
        "cases": cases,
        "leads": sum(originals for plan in plans if plan.action == "lead"),
        # Replies join their case and get no auto-response; each original gets exactly one.
        "auto_replies": sum(originals for plan in plans if plan.with_rule),
    }


class ScaleCluster:
    def __init__(
        self,
        *,
        postgres: PostgresServer,
        redis: RedisServer,
        dovecot: DovecotServer,
        smtp: RecordingSmtpServer,
        plans: list[MailboxPlan] | None = None,
        poll_interval: int = 2,
    ) -> None:
        self.postgres, self.redis, self.dovecot, self.smtp = postgres, redis, dovecot, smtp
        self.plans = list(plans or DEFAULT_PLANS)
        self.poll_interval = poll_interval
        # Under var/ like the product's default data dir (see bench/ingest.py on /tmp's cost).
        (REPO / "var").mkdir(exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="scale-", dir=REPO / "var"))
        self.database_url = postgres.create_database(f"scale_{os.getpid()}_{int(time.time() * 1000)}")
        self.accounts: dict[str, str] = {}
        self.workers: dict[str, subprocess.Popen] = {}
        self.beat: subprocess.Popen | None = None

    # -- environment ------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "mailhub.settings",
                "SECRET_KEY": "scale-test-secret",
                "MAILHUB_ENCRYPTION_KEYS": "3q1cXn7Wl3oH6f3m8m4zK8H4m0QO4t8s6QnXb7q2J2U=",
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis.url,
                "MAILHUB_DATA_DIR": str(self.workdir / "data"),
                # Short timeouts so that a killed worker's work is taken over within the test.
                "CELERY_VISIBILITY_TIMEOUT": "20",
                "MAILHUB_POLL_LEASE_SECONDS": "15",
                "MAILHUB_REQUEUE_PENDING_AFTER": "8",
                "MAILHUB_DISPATCH_EVERY": "1",
                "LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    # -- set-up -----------------------------------------------------------------------------
    def prepare(self, per_mailbox: int) -> None:
        """Migrate, fill one Dovecot account per mailbox, configure the mailboxes (inactive)."""
        self.manage("migrate", "--noinput", "-v", "0")
        specs = []
        for plan in self.plans:
            username = self.dovecot.new_account()
            self.accounts[plan.label] = username
            with self.dovecot.client(username) as client:
                for n in range(per_mailbox):
                    client.append("INBOX", scale_message(plan.label, n))
            specs.append(
                {
                    "plan": plan.__dict__,
                    "username": username,
                    "uidvalidity": self.dovecot.uidvalidity(username),
                }
            )
        setup = {
            "imap_port": self.dovecot.port,
            "smtp_port": self.smtp.port,
            "password": PASSWORD,
            "poll_interval": self.poll_interval,
            "mailboxes": specs,
        }
        self.manage("shell", "-c", _SETUP_CODE.replace("SPEC_JSON", json.dumps(json.dumps(setup))))

    def activate(self) -> None:
        self.sql("UPDATE mailboxes_mailbox SET is_active = true")

    # -- processes --------------------------------------------------------------------------
    def start_worker(self, name: str, concurrency: int = 1) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.workers[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "--app",
                "mailhub",
                "worker",
                f"--hostname={name}@%h",
                f"--concurrency={concurrency}",
                "--pool=prefork",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=WARNING",
            ],
            cwd=REPO,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGKILL takes the pool children too
        )

    def kill_worker(self, name: str) -> None:
        process = self.workers.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def start_beat(self) -> None:
        log = open(self.workdir / "beat.log", "ab")  # noqa: SIM115 - owned by the process
        self.beat = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "--app",
                "mailhub",
                "beat",
                f"--schedule={self.workdir / 'beat-schedule'}",
                "--loglevel=WARNING",
            ],
            cwd=REPO,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def remove_files(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def stop(self) -> None:
        for name in list(self.workers):
            process = self.workers.pop(name)
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        if self.beat is not None:
            os.killpg(self.beat.pid, signal.SIGTERM)
            try:
                self.beat.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.beat.pid, signal.SIGKILL)
            self.beat = None

    def logs(self) -> str:
        return "\n".join(f"== {path.name}\n{path.read_text()[-3000:]}" for path in self.workdir.glob("*.log"))

    # -- observation ------------------------------------------------------------------------
    def sql(self, query: str) -> list[tuple]:
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            cursor = connection.execute(query)
            return cursor.fetchall() if cursor.description else []

    def counts(self) -> dict[str, int]:
        [row] = self.sql(
            """
            SELECT
              (SELECT count(*) FROM mailboxes_email),
              (SELECT count(*) FROM mailboxes_email WHERE processing_status = 'done'),
              (SELECT count(*) FROM processing_case),
              (SELECT count(*) FROM processing_lead),
              (SELECT count(*) FROM autoresponse_autoreply WHERE status = 'sent'),
              (SELECT count(*) FROM autoresponse_autoreply),
              (SELECT count(*) FROM mailboxes_email WHERE processing_status IN ('pending', 'failed'))
            """
        )
        keys = ("emails", "processed", "cases", "leads", "auto_replies_sent", "auto_replies", "backlog")
        result = dict(zip(keys, row, strict=True))
        result["smtp_received"] = len(self.smtp.messages)
        return result

    def wait_until(self, done: Callable[[dict[str, int]], bool], timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts()
            if done(counts):
                return counts
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster did not get there in {timeout:.0f}s: {counts}\n{self.logs()}")
            time.sleep(0.5)


_SETUP_CODE = """
import json
from autoresponse.models import AutoResponseRule, EmailTemplate
from mailboxes.models import Mailbox
spec = json.loads(SPEC_JSON)
template = EmailTemplate.objects.create(
    name="ack", subject="[{{ case.reference }}] {{ email.subject }}", text_body="We got it."
)
for item in spec["mailboxes"]:
    plan = item["plan"]
    mailbox = Mailbox.objects.create(
        label=plan["label"], email=plan["label"] + "@acme.example",
        imap_host="127.0.0.1", imap_port=spec["imap_port"], imap_security="none",
        imap_username=item["username"], imap_password=spec["password"],
        smtp_host="127.0.0.1", smtp_port=spec["smtp_port"], smtp_security="none",
        processing_action=plan["action"], history_import="none", is_active=False,
        poll_interval=spec["poll_interval"],
        # A load test of 180 acknowledgements per mailbox within a minute: the per-hour safety
        # cap (default 100) is not what it measures.
        auto_reply_hourly_cap=100_000,
        # As if the first poll had seen the folder empty: everything in it arrives as new mail.
        imap_uidvalidity=item["uidvalidity"], imap_last_uid=0, imap_history_last_uid=0,
    )
    if plan["with_rule"]:
        AutoResponseRule.objects.create(mailbox=mailbox, name="ack", template=template)
"""
