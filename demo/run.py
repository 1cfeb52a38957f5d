"""mailhub in a minute: real IMAP and SMTP servers, two mailboxes, the product running on them.

    .venv/bin/python demo/run.py            # serve until Ctrl-C (what `make demo` runs)
    .venv/bin/python demo/run.py --check    # run until everything arrived, print a summary, exit

What happens:
1. a throw-away Dovecot (IMAP) and an SMTP sink start on 127.0.0.1 (the test suite's own server
   classes, tests/servers); the sink prints every auto-reply it receives;
2. a fresh data dir (var/demo/: SQLite database, stored emails, broker queue) is migrated, with an
   admin `demo`/`demo` and a staff user `agent`/`agent`;
3. two mailboxes are configured: "Support" turns each new email into a case and acknowledges it
   with an auto-response rule; "Sales" turns emails into leads. Each gets a first poll while its
   folder is still empty, so that everything appended afterwards is *new* mail, not history;
4. the real messages of ../shared/corpus (or generated ones if it is missing) plus a few written
   here are appended to the Support account, a few sales inquiries to the Sales account;
5. `manage.py run_mailhub` starts the product (web server + Celery worker with embedded beat on the
   filesystem broker) with the same environment; the beat polls both mailboxes every 10 s.

The demo never touches the real configuration: every setting comes from the environment set below
before Django loads, and the data dir is wiped at start so each demo starts fresh.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: sys.path[0] is demo/, not the repository
    sys.path.insert(0, str(REPO))

from tests.corpus import CORPUS_DIR, corpus_files  # noqa: E402 - ../shared/corpus, as the tests read it
from tests.servers import PASSWORD, DovecotServer, ReceivedMessage, RecordingSmtpServer  # noqa: E402
from tests.servers.common import LOCALHOST, port_is_open  # noqa: E402

DEFAULT_DATA_DIR = REPO / "var" / "demo"
DOVECOT_BINARY = "/usr/sbin/dovecot"
# A file the demo writes into its data dir: only a directory holding it is ever wiped, so a
# mistyped --data-dir can't delete anything else.
MARKER = ".mailhub-demo"
POLL_INTERVAL = 10
# Seconds between two runs of the beat dispatcher (the product's default is 15): with a 10 s poll
# interval, the newcomer should not wait 15 s for every poll.
DISPATCH_EVERY = 2
CHECK_TIMEOUT = 90.0
SETPRIV = "/usr/bin/setpriv"
# The filesystem broker hands each worker process one task per polling interval (kombu's default,
# 1 s): with the default concurrency of 2, the ~140 tasks of the demo's first wave would take over
# a minute. Four processes halve that without changing anything else of the product.
WORKER_CONCURRENCY = 4

SUPPORT_ADDRESS = "support@acme.example"
SALES_ADDRESS = "sales@acme.example"
SUPPORT_ACCOUNT = "support"
SALES_ACCOUNT = "sales"
# Generated in place of the corpus when ../shared/corpus is missing.
FALLBACK_CORPUS_SIZE = 20

TEMPLATE_SUBJECT = "[{{ case.reference }}] {{ email.subject }}"
TEMPLATE_TEXT = """\
Hello {{ email.sender_name or email.sender_address }},

We received your request {{ case.reference }} ("{{ email.subject }}") and will get back to you
within one business day. Keep {{ case.reference }} in the subject when you write to us about it:
your message then joins the same case.

The {{ mailbox.label }} team
"""


# -- messages --------------------------------------------------------------------------------


def _message(
    n: int,
    *,
    sender: str,
    to: str,
    subject: str,
    body: str,
    extra_headers: str = "",
    domain: str = "demo.example",
) -> bytes:
    date = format_datetime(datetime.now(UTC) - timedelta(minutes=60 - n))
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: <demo-{n}@{domain}>\r\n{extra_headers}"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        f"\r\n{body}"
    ).encode()


def support_messages() -> list[bytes]:
    """Written to show what a help desk meets: new requests, a reply, robots that must not be
    answered (RFC 3834), and the same customer writing twice within the rate-limit window."""
    to = f"Acme Support <{SUPPORT_ADDRESS}>"
    return [
        _message(
            1,
            sender="Anna Schmidt <anna.schmidt@kunde-a.example>",
            to=to,
            subject="Cannot log in after password reset",
            body="Hello,\r\n\r\nsince I reset my password this morning the login page says "
            "'invalid credentials'.\r\nI tried two browsers.\r\n\r\nAnna\r\n",
        ),
        _message(
            2,
            sender="Marco Rossi <marco@rossi-bau.example>",
            to=to,
            subject="Invoice 2026-0412: wrong VAT number",
            body="Hi,\r\n\r\nthe invoice 2026-0412 shows VAT number IT0000000 but ours is "
            "IT12345678901.\r\nCould you send a corrected invoice?\r\n\r\nMarco Rossi\r\n",
        ),
        _message(
            3,
            sender="Anna Schmidt <anna.schmidt@kunde-a.example>",
            to=to,
            subject="Re: Cannot log in after password reset",
            extra_headers="In-Reply-To: <demo-1@demo.example>\r\nReferences: <demo-1@demo.example>\r\n",
            body="Update: it works in a private window, so it is probably a cookie.\r\n\r\nAnna\r\n",
        ),
        _message(
            4,
            sender="Li Wei <li.wei@partner.example>",
            to=to,
            subject="Automatic reply: Your ticket",
            extra_headers="Auto-Submitted: auto-replied\r\nX-Auto-Response-Suppress: All\r\n",
            body="I am out of the office until Monday and will read your message then.\r\n",
        ),
        _message(
            5,
            sender="Tools Weekly <news@tools-weekly.example>",
            to=to,
            subject="Tools Weekly #112: ten keyboard shortcuts",
            extra_headers="Precedence: bulk\r\nList-Id: <weekly.tools-weekly.example>\r\n"
            "List-Unsubscribe: <mailto:unsubscribe@tools-weekly.example>\r\n",
            body="This week: ten keyboard shortcuts that save an hour a day.\r\n",
        ),
        _message(
            6,
            sender="Anna Schmidt <anna.schmidt@kunde-a.example>",
            to=to,
            subject="Export to CSV is missing the date column",
            body="Another thing: the CSV export has no date column since the last update.\r\n",
        ),
    ]


def sales_messages() -> list[bytes]:
    """Four inquiries from three senders: the follow-up joins its sender's open lead."""
    to = f"Acme Sales <{SALES_ADDRESS}>"
    return [
        _message(
            11,
            sender="Jonas Meyer <j.meyer@meyer-logistik.example>",
            to=to,
            subject="Quote for 40 seats",
            body="Good morning,\r\n\r\nwe would like a quote for 40 seats, yearly billing.\r\n\r\n"
            "Jonas Meyer\r\nMeyer Logistik\r\n",
        ),
        _message(
            12,
            sender="Priya Nair <priya@northwind.example>",
            to=to,
            subject="Partnership inquiry",
            body="Hello, we resell tools in India and would like to talk about a partnership.\r\n",
        ),
        _message(
            13,
            sender="Jonas Meyer <j.meyer@meyer-logistik.example>",
            to=to,
            subject="Quote for 40 seats: also 10 read-only users?",
            body="One more question: can we add 10 read-only users to that quote?\r\n",
        ),
        _message(
            14,
            sender="tom.baker@bakery.example",
            to=to,
            subject="Demo request",
            body="Could someone show us the product next week?\r\n",
        ),
    ]


def fallback_corpus() -> list[bytes]:
    """Generated customer emails, used when the shared corpus is not next to the repository."""
    topics = [
        "Order {n} arrived damaged",
        "Where is my order {n}?",
        "Change the delivery address of order {n}",
        "Refund for order {n}",
        "Question about invoice {n}",
    ]
    return [
        _message(
            100 + n,
            sender=f"Customer {n} <customer{n}@example.org>",
            to=f"Acme Support <{SUPPORT_ADDRESS}>",
            subject=topics[n % len(topics)].format(n=40000 + n),
            body=f"Hello,\r\n\r\nplease have a look at order {40000 + n}.\r\n\r\nThanks\r\n",
            domain="generated.example",
        )
        for n in range(FALLBACK_CORPUS_SIZE)
    ]


def corpus_messages() -> tuple[list[bytes], bool]:
    """The shared corpus (every .eml of ../shared/corpus, as tests/corpus.py finds them), or
    generated messages when it is missing; and which of the two."""
    files = corpus_files()
    if files:
        return [path.read_bytes() for path in files], True
    return fallback_corpus(), False


# -- environment -------------------------------------------------------------------------------


def demo_environment(data_dir: Path, addr: str) -> dict[str, str]:
    """Everything the product reads, set before Django loads (real environment variables win over
    the repository's .env, so a developer's own configuration never leaks into the demo)."""
    from cryptography.fernet import Fernet

    return {
        "DJANGO_SETTINGS_MODULE": "mailhub.settings",
        "MAILHUB_DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir / 'mailhub.sqlite3'}",
        "MEDIA_ROOT": str(data_dir / "media"),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "MAILHUB_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DEBUG": "false",
        "ALLOWED_HOSTS": ",".join(dict.fromkeys([addr, "127.0.0.1", "localhost"])),
        # The embedded mode: filesystem broker under the data dir, whatever .env says.
        "REDIS_URL": "",
        "CELERY_BROKER_URL": "filesystem://",
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "MAILHUB_DISPATCH_EVERY": str(DISPATCH_EVERY),
        "MAILHUB_NETWORK_TIMEOUT": "10",
        "EMAIL_URL": "consolemail://",
        "PYTHONUNBUFFERED": "1",
    }


def fresh_data_dir(data_dir: Path) -> None:
    if data_dir.exists():
        if any(data_dir.iterdir()) and not (data_dir / MARKER).exists():
            raise SystemExit(f"{data_dir} is not empty and was not made by the demo: not wiping it")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    (data_dir / MARKER).write_text("Made by demo/run.py; wiped at the start of every demo.\n")


# -- servers ---------------------------------------------------------------------------------


class ConsoleSmtpSink(RecordingSmtpServer):
    """The test suite's recording SMTP server, also printing each message as it arrives."""

    def _record(self, message: ReceivedMessage) -> None:
        super()._record(message)
        say(f"    auto-reply -> {message.message['To']}: {message.message['Subject']}")


def say(text: str = "") -> None:
    print(text, flush=True)


# -- setup inside Django ---------------------------------------------------------------------


@dataclass
class DemoSetup:
    support_id: int
    sales_id: int
    appended: dict[str, int] = field(default_factory=dict)
    last_uid: dict[str, int] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)


def setup_django_state(dovecot: DovecotServer, smtp: RecordingSmtpServer) -> DemoSetup:
    import django
    from django.core.management import call_command

    django.setup()
    # The SMTP sink (aiosmtpd) logs every SMTP command at INFO; the demo prints what matters.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("mailhub.poll").setLevel(logging.WARNING)  # the first polls are announced
    call_command("migrate", verbosity=0, interactive=False)

    from django.contrib.auth.models import Group, User

    from autoresponse.models import AutoResponseRule, EmailTemplate
    from autoresponse.rendering import template_validate
    from mailboxes.models import Mailbox
    from mailboxes.services import mailbox_poll

    admin = User.objects.create_superuser("demo", "demo@acme.example", "demo")
    agent = User.objects.create_user(
        "agent", "agent@acme.example", "agent", is_staff=True, first_name="Alex", last_name="Agent"
    )
    team = Group.objects.create(name="Support team")
    agent.groups.add(team)

    common = {
        "imap_host": dovecot.host,
        "imap_port": dovecot.port,
        "imap_security": "none",
        "imap_password": PASSWORD,
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "smtp_security": "none",
        "poll_interval": POLL_INTERVAL,
        # Whatever is in the folder at the first poll is the past: skipped, never answered.
        "history_import": "none",
    }
    support = Mailbox.objects.create(
        label="Support",
        email=SUPPORT_ADDRESS,
        imap_username=SUPPORT_ACCOUNT,
        processing_action="case",
        default_owner=admin,
        default_case_assignee=agent,
        **common,
    )
    support.authorized_groups.add(team)
    sales = Mailbox.objects.create(
        label="Sales",
        email=SALES_ADDRESS,
        imap_username=SALES_ACCOUNT,
        processing_action="lead",
        default_owner=admin,
        **common,
    )
    for source in (TEMPLATE_SUBJECT, TEMPLATE_TEXT):
        template_validate(source, html=False)  # what the admin form checks before saving
    template = EmailTemplate.objects.create(
        name="Support acknowledgement", subject=TEMPLATE_SUBJECT, text_body=TEMPLATE_TEXT
    )
    AutoResponseRule.objects.create(mailbox=support, name="Acknowledge every new request", template=template)

    for mailbox in (support, sales):
        result = mailbox_poll(mailbox_id=mailbox.pk)
        if result.error:
            raise SystemExit(f"first poll of {mailbox.label} failed: {result.error}")
    return DemoSetup(support_id=support.pk, sales_id=sales.pk)


def append_all(dovecot: DovecotServer, username: str, messages: list[bytes]) -> dict[int, bytes]:
    """APPEND over one IMAP session; return what the server now serves, by UID."""
    with dovecot.client(username) as imap:
        for raw in messages:
            imap.append("INBOX", raw)
    return dovecot.messages(username)


def expected_outcome(served: dict[str, dict[int, bytes]]) -> dict[str, int]:
    """What the product must end with, computed here from the served bytes with the product's pure
    parts only (parser, identity, loop rules), never from the worker's results.

    Assumes what holds for this demo's messages: a reply names an email appended before it, and
    the rule answers every new case once per sender (rate limit) unless the loop rules object.
    """
    from autoresponse.loops import LoopCheckInput, address_key, answered_address, suppression_reason
    from mailboxes.parsing import parse_email
    from mailboxes.services.storing import message_identity

    own = frozenset({SUPPORT_ADDRESS, SALES_ADDRESS})
    counts: Counter[str] = Counter()
    for account, messages in served.items():
        identities: set[str] = set()
        message_ids: set[str] = set()
        answered: set[str] = set()
        senders: set[str] = set()
        for _uid, raw in sorted(messages.items()):
            parsed = parse_email(raw)
            identity = message_identity(raw, parsed.message_id)
            if identity in identities:
                counts["duplicates"] += 1
                continue
            identities.add(identity)
            counts["emails"] += 1
            references = {parsed.in_reply_to, *parsed.references} - {""}
            is_reply = bool(references & message_ids)
            if parsed.message_id:
                message_ids.add(parsed.message_id[:998])
            if account == SALES_ACCOUNT:
                senders.add(parsed.from_address.lower())
                continue
            if is_reply:
                counts["replies"] += 1  # joins its case; the rule does not answer replies
                continue
            counts["cases"] += 1
            recipient = answered_address(
                reply_to=[(a.name, a.address) for a in parsed.reply_to], sender_address=parsed.from_address
            )
            loop = suppression_reason(
                LoopCheckInput(
                    headers=parsed.headers,
                    sender_address=parsed.from_address,
                    own_addresses=own,
                    answered=recipient,
                )
            )
            key = address_key(recipient)
            if loop or not recipient or key in answered:
                counts["auto_replies_suppressed"] += 1
            else:
                answered.add(key)
                counts["auto_replies_sent"] += 1
        if account == SALES_ACCOUNT:
            counts["leads"] = len(senders)
    return {key: counts[key] for key in ("duplicates", "emails", "cases", "replies", "leads")} | {
        "auto_replies_sent": counts["auto_replies_sent"],
        "auto_replies_suppressed": counts["auto_replies_suppressed"],
    }


# -- observing the running product -----------------------------------------------------------


def snapshot(setup: DemoSetup, smtp: RecordingSmtpServer) -> dict:
    """Counts from the database (a handful of queries) and the SMTP sink."""
    from django.db import connection
    from django.db.models import Count, Q

    from autoresponse.models import AutoReply
    from mailboxes.models import Email, Mailbox
    from processing.models import Case, Lead

    emails = Email.objects.aggregate(
        total=Count("pk"),
        support=Count("pk", filter=Q(mailbox_id=setup.support_id)),
        sales=Count("pk", filter=Q(mailbox_id=setup.sales_id)),
        unprocessed=Count("pk", filter=Q(processing_status__in=["pending", "failed"])),
        failed=Count("pk", filter=Q(processing_status="failed")),
        joined=Count(
            "pk", filter=Q(mailbox_id=setup.support_id, case__isnull=False, created_case__isnull=True)
        ),
        without_case=Count("pk", filter=Q(mailbox_id=setup.support_id, case__isnull=True)),
        history=Count("pk", filter=Q(is_history=True)),
    )
    replies = dict(AutoReply.objects.values_list("status").annotate(n=Count("pk")).order_by())
    reasons = Counter(
        reason.split(":", 1)[0].split(" (", 1)[0]
        for reason in AutoReply.objects.filter(status="suppressed").values_list("reason", flat=True)
    )
    cursors = dict(Mailbox.objects.values_list("imap_username", "imap_last_uid"))
    polled = dict(Mailbox.objects.values_list("imap_username", "last_success_at"))
    data = {
        "emails": emails["total"],
        "emails_support": emails["support"],
        "emails_sales": emails["sales"],
        "emails_unprocessed": emails["unprocessed"],
        "emails_failed": emails["failed"],
        "emails_history": emails["history"],
        "emails_joining_cases": emails["joined"],
        "support_emails_without_case": emails["without_case"],
        "cases": Case.objects.count(),
        "leads": Lead.objects.count(),
        "auto_replies_sent": replies.get("sent", 0),
        "auto_replies_suppressed": replies.get("suppressed", 0),
        "auto_replies_failed": replies.get("failed", 0),
        "auto_replies_in_flight": replies.get("pending", 0) + replies.get("sending", 0),
        "suppression_reasons": dict(reasons.most_common()),
        "smtp_received": len(smtp.messages),
        "cursors": cursors,
        "polled": {name: bool(moment) for name, moment in polled.items()},
    }
    connection.close()  # don't hold the SQLite file open between two looks
    return data


def finished(setup: DemoSetup, now: dict) -> bool:
    """Every appended message was fetched, every email processed, every auto-reply delivered."""
    return (
        all(now["cursors"].get(account, 0) >= uid for account, uid in setup.last_uid.items())
        and now["emails_unprocessed"] == 0
        and now["auto_replies_in_flight"] == 0
        and now["smtp_received"] == now["auto_replies_sent"]
    )


def progress_line(now: dict) -> str:
    return (
        f"  stored {now['emails']} emails (Support {now['emails_support']}, Sales {now['emails_sales']}),"
        f" {now['emails_unprocessed']} to process; {now['cases']} cases, {now['leads']} leads;"
        f" auto-replies {now['auto_replies_sent']} sent, {now['auto_replies_suppressed']} suppressed"
    )


# -- the product as a subprocess -------------------------------------------------------------


def start_product(addr: str, port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`manage.py run_mailhub` in its own session, so that the terminal's Ctrl-C reaches only the
    demo, which then stops it in order (SIGINT: runserver exits and stops its Celery worker).

    `setpriv --pdeathsig INT` also stops it that way if the demo itself is killed.
    """
    prefix = [SETPRIV, "--pdeathsig=INT", "--"] if os.access(SETPRIV, os.X_OK) else []
    argv = [
        sys.executable,
        "manage.py",
        "run_mailhub",
        "--addr",
        addr,
        "--port",
        str(port),
        "--concurrency",
        str(WORKER_CONCURRENCY),
    ]
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - fixed argv: our interpreter and manage.py
            [*prefix, *argv],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_product(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGINT)
    try:
        process.wait(45)  # the worker finishes its running task (warm shutdown) within this
    except subprocess.TimeoutExpired:
        # Not yet reaped, so its pid still names its process group (worker and pool included).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def wait_for_web(addr: str, port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_is_open(addr, port):
        if process.poll() is not None:
            raise RuntimeError(f"run_mailhub exited with {process.returncode} before serving")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {addr}:{port} after {timeout:.0f}s")
        time.sleep(0.2)


def _log_tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo like Ctrl-C: everything is cleaned up


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="stop when everything arrived; print a summary")
    parser.add_argument("--addr", default=LOCALHOST, help="web server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="web server port (default 8000)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="wiped at start (var/demo)")
    parser.add_argument("--timeout", type=float, default=CHECK_TIMEOUT, help="--check gives up after this")
    args = parser.parse_args(argv)

    if not os.access(DOVECOT_BINARY, os.X_OK):
        say(f"Dovecot is needed for the demo's IMAP server: apt-get install dovecot-imapd ({DOVECOT_BINARY})")
        return 2
    if port_is_open(args.addr, args.port):
        say(f"{args.addr}:{args.port} is already in use: choose another port with --port")
        return 2
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    # Started in the background by a non-interactive shell, SIGINT arrives ignored, and an ignored
    # signal stays ignored in children: run_mailhub could then not be stopped by SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    data_dir = args.data_dir.resolve()
    fresh_data_dir(data_dir)
    env = demo_environment(data_dir, args.addr)
    os.environ.update(env)
    log_path = data_dir / "mailhub.log"

    say("mailhub demo")
    dovecot = DovecotServer()
    smtp = ConsoleSmtpSink()
    product: subprocess.Popen[bytes] | None = None
    try:
        dovecot.start()
        smtp.start()
        say(
            f"  IMAP server (Dovecot)   {dovecot.host}:{dovecot.port}, "
            f"accounts '{SUPPORT_ACCOUNT}', '{SALES_ACCOUNT}'"
        )
        say(f"  SMTP sink               {smtp.host}:{smtp.port} (auto-replies end here and are printed)")

        setup = setup_django_state(dovecot, smtp)
        say(f"  data dir                {data_dir} (SQLite, stored emails, broker queue)")
        say("  mailboxes               Support (case + auto-response), Sales (lead); first poll done")

        corpus, from_corpus = corpus_messages()
        if not from_corpus:
            say(f"  NOTE: no corpus at {CORPUS_DIR}: generating {len(corpus)} customer emails instead")
        support_sent = corpus + support_messages()
        sales_sent = sales_messages()
        served = {
            SUPPORT_ACCOUNT: append_all(dovecot, SUPPORT_ACCOUNT, support_sent),
            SALES_ACCOUNT: append_all(dovecot, SALES_ACCOUNT, sales_sent),
        }
        setup.appended = {"Support": len(support_sent), "Sales": len(sales_sent)}
        setup.last_uid = {account: max(messages) for account, messages in served.items()}
        setup.expected = expected_outcome(served)
        source = f"{len(corpus)} from {CORPUS_DIR}" if from_corpus else f"{len(corpus)} generated"
        say(
            f"  appended                {len(support_sent)} messages to {SUPPORT_ADDRESS} ({source}, "
            f"{len(support_sent) - len(corpus)} written by the demo), {len(sales_sent)} to {SALES_ADDRESS}"
        )

        if not args.check:
            # The admin's CSS and JS: whitenoise serves them from STATIC_ROOT, as in `make run`.
            from django.core.management import call_command

            call_command("collectstatic", interactive=False, verbosity=0)
        say(
            f"  starting                manage.py run_mailhub --addr {args.addr} --port {args.port} "
            f"--concurrency {WORKER_CONCURRENCY}"
        )
        say(f"                          (web + Celery worker with beat; log: {log_path})")
        started = time.monotonic()
        product = start_product(args.addr, args.port, env, log_path)
        wait_for_web(args.addr, args.port, product, timeout=60)
        url = f"http://{args.addr}:{args.port}/"
        say()
        say(f"  mailhub runs on {url}  (staff pages: emails, cases, leads; admin: {url}admin/)")
        say("    demo / demo     administrator: sees everything, configures mailboxes and rules")
        say("    agent / agent   staff in the group 'Support team', which is granted Support only")
        say(
            f"  Both mailboxes are polled every {POLL_INTERVAL} s: "
            "watch the cases, leads and auto-replies arrive."
        )
        say("  Ctrl-C stops everything." if not args.check else "  Waiting until everything arrived...")
        say()
        remaining = args.timeout - (time.monotonic() - started)
        return watch(setup, smtp, product, check=args.check, timeout=remaining, log_path=log_path)
    except KeyboardInterrupt:
        say("\n  stopping...")
        return 0
    finally:
        if product is not None:
            stop_product(product)
        smtp.stop()
        dovecot.stop()


def watch(
    setup: DemoSetup,
    smtp: RecordingSmtpServer,
    product: subprocess.Popen[bytes],
    *,
    check: bool,
    timeout: float,
    log_path: Path,
) -> int:
    """Print progress whenever a count changes. With --check, stop at the summary (or timeout);
    otherwise print the summary once everything arrived and keep serving until Ctrl-C."""
    deadline = time.monotonic() + timeout
    last_line = ""
    reported = False
    while True:
        now = snapshot(setup, smtp)
        line = progress_line(now)
        if line != last_line:
            say(line)
            last_line = line
        if not reported and finished(setup, now):
            outcome = report(setup, snapshot(setup, smtp))
            if check:
                return outcome
            reported = True
            say("  Still serving: Ctrl-C stops everything.")
        if product.poll() is not None:
            say(f"run_mailhub exited with {product.returncode}; its log ends with:\n{_log_tail(log_path)}")
            return 1
        if check and time.monotonic() > deadline:
            say("TIMEOUT: not everything arrived in time.")
            say(f"  now:      {json.dumps(now, default=str, sort_keys=True)}")
            say(f"  expected: {json.dumps(setup.expected, sort_keys=True)}, last UIDs {setup.last_uid}")
            say(f"  {log_path} ends with:\n{_log_tail(log_path)}")
            return 1
        time.sleep(0.5)


def show_status() -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import connection

    try:
        call_command("mailhub_status")
    except CommandError as exc:  # a failing mailbox is worth showing, not worth a traceback
        say(str(exc))
    finally:
        connection.close()


def report(setup: DemoSetup, now: dict) -> int:
    expected = setup.expected
    rows = [
        ("messages appended", sum(setup.appended.values()), None),
        ("duplicates recognised", sum(setup.appended.values()) - now["emails"], expected["duplicates"]),
        ("emails stored", now["emails"], expected["emails"]),
        ("cases (Support)", now["cases"], expected["cases"]),
        ("replies joining a case", now["emails_joining_cases"], expected["replies"]),
        ("leads (Sales)", now["leads"], expected["leads"]),
        ("auto-replies sent", now["auto_replies_sent"], expected["auto_replies_sent"]),
        ("auto-replies suppressed", now["auto_replies_suppressed"], expected["auto_replies_suppressed"]),
        ("auto-replies failed", now["auto_replies_failed"], 0),
        ("received by the SMTP sink", now["smtp_received"], now["auto_replies_sent"]),
    ]
    say()
    say("Summary                          actual  expected")
    for name, actual, wanted in rows:
        mark = "" if wanted is None or wanted == actual else "   <-- differs"
        say(f"  {name:<28} {actual:>7}  {'' if wanted is None else wanted:>8}{mark}")
    say("  suppressed because:")
    for reason, count in now["suppression_reasons"].items():
        say(f"    {count:>4}  {reason}")
    say()
    summary = {
        "corpus_dir": str(CORPUS_DIR),
        "appended": setup.appended,
        "expected": expected,
        "actual": {key: value for key, value in now.items() if key not in ("cursors", "polled")},
    }
    say("Operations view (python manage.py mailhub_status):")
    show_status()
    say()
    # One line for machines (tests/test_demo.py reads it).
    say("DEMO-SUMMARY " + json.dumps(summary, sort_keys=True))
    differs = any(wanted is not None and wanted != actual for _name, actual, wanted in rows)
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
