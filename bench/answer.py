"""Answer benchmark: from an agent's Send to the answer accepted by the SMTP server, one run.

    python bench/answer.py [--answers 30]      (or: make bench-answer)

Seeds a mailbox with a case email (SQLite under var/, as the embedded mode), starts the recording
SMTP server of the test suite on 127.0.0.1, and answers the email `--answers` times through the
staff page (Django's test client: session, CSRF-free client, form, service, storing the outgoing
email), with the send run as soon as the answer's transaction commits (Celery eager, so the
queue's own pick-up delay is not part of it: the worker picks a task up within the broker's
polling interval, 0.1 s on the embedded filesystem broker). Prints, per answer, the time from the
POST to the message being recorded by the SMTP server, and the median and max; and the same for
the POST alone (the page's answer to the agent).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def setup_django(data_dir: str) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "mailhub.settings",
            "SECRET_KEY": "bench-secret-key",
            "MAILHUB_ENCRYPTION_KEYS": "3q1cXn7Wl3oH6f3m8m4zK8H4m0QO4t8s6QnXb7q2J2U=",
            "MAILHUB_DATA_DIR": data_dir,
            "DATABASE_URL": f"sqlite:///{data_dir}/bench.sqlite3",
            "LOG_LEVEL": "WARNING",
            "CELERY_TASK_ALWAYS_EAGER": "true",
            "MAILHUB_ANSWERS_PER_USER_PER_HOUR": "100000",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=30)
    args = parser.parse_args()
    from tests.servers import RecordingSmtpServer

    (REPO / "var").mkdir(exist_ok=True)
    with (
        RecordingSmtpServer() as smtp,
        tempfile.TemporaryDirectory(prefix="bench-answer-", dir=REPO / "var") as data_dir,
    ):
        setup_django(data_dir)
        from django.contrib.auth.models import User
        from django.test import Client
        from django.urls import reverse

        from mailboxes.models import Email, Mailbox
        from processing.services import email_convert_to_case

        mailbox = Mailbox.objects.create(
            label="Support",
            email="support@acme.example",
            imap_host="127.0.0.1",
            imap_username="u",
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            smtp_security="none",
            imap_sent_folder="",  # no IMAP server here: the Sent copy is not measured
        )
        agent = User.objects.create_user("alex", password="bench-password")
        mailbox.authorized_users.add(agent)
        original = Email.objects.create(
            mailbox=mailbox,
            uidvalidity=1,
            uid=1,
            message_id="<q1@customer.example>",
            subject="Printer broken",
            from_name="Ann Customer",
            from_address="ann@customer.example",
            headers=[["From", "ann@customer.example"]],
            text_body="The printer is broken.\nPlease help.\n" * 20,
            raw="raw/bench.eml",
            content_sha256="0" * 64,
            identity="bench",
        )
        email_convert_to_case(email_id=original.pk)
        from django.test.utils import setup_test_environment

        setup_test_environment()  # the form's initial values are read from the response's context
        client = Client(HTTP_HOST="localhost")
        client.force_login(agent)
        url = reverse("answers:reply", args=[original.pk])

        to_accepted, to_page = [], []
        for n in range(args.answers + 2):  # the first two warm up (templates, connections)
            form = client.get(url).context["form"]
            data = {name: form.initial.get(name, "") for name in ("to", "cc", "bcc", "subject", "body")}
            data |= {"submission_key": form.initial["submission_key"], "include_quote": "on", "send": "1"}
            before = len(smtp.messages)
            started = time.perf_counter()
            response = client.post(url, data)
            answered = time.perf_counter()
            smtp.wait_for(before + 1)
            accepted = time.perf_counter()
            if response.status_code != 302:
                raise RuntimeError(f"the answer was refused: {response.status_code}")
            if n >= 2:
                to_page.append((answered - started) * 1000)
                to_accepted.append((accepted - started) * 1000)

    print(f"{args.answers} answers (reply with the quote of a 760-character email, SQLite, eager send)")
    page_median, page_max = statistics.median(to_page), max(to_page)
    print(f"  Send -> page answered          median {page_median:7.1f} ms   max {page_max:7.1f} ms")
    print(
        f"  Send -> accepted by SMTP       median {statistics.median(to_accepted):7.1f} ms   "
        f"max {max(to_accepted):7.1f} ms"
    )


if __name__ == "__main__":
    main()
