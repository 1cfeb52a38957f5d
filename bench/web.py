"""Web benchmark: My Emails' grid at 100,000 emails, against the same page at 1,000, one run.

    python bench/web.py [--emails 100000] [--database-url postgres://... | --postgres]
    make bench-web (SQLite) | make bench-web-postgres (a throwaway PostgreSQL cluster)

Seeds 100,000 emails in one mailbox plus 10 more mailboxes (one of 1,000 emails, the baseline,
and nine of 100), then prints:
- SQL queries of one grid page at 25 and 100 rows, on page 1 and on page 4,000: the count must
  not grow with the page size or the page number;
- the median time of whole requests (middleware, session, selectors, template) through Django's
  test client: the first page of the 1,000-email mailbox (the baseline), then the first page,
  page 4,000 (the oldest 25 of 100,000) and searches of the 100,000-email mailbox, each also as a
  ratio to the baseline. Target: flat, page 4,000 and every search within 2x of the baseline.
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAGE_SIZE = 25
RUNS = 25
WORDS = [
    "order", "invoice", "refund", "delivery", "parcel", "question", "account", "password", "shipping",
    "damaged", "thanks", "urgent", "please", "help", "support", "payment", "card", "receipt", "return",
    "exchange", "warranty", "broken", "missing", "late", "address", "customer", "service",
    "subscription", "cancel", "upgrade", "plan", "price", "discount", "coupon", "product", "size",
]  # fmt: skip
RARE_NAME = "castellanos"  # in 1% of the emails: a realistic search for one customer
COMMON_WORD = "order"  # in about half of them


def setup_django(data_dir: str, database_url: str | None) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "mailhub.settings",
            "SECRET_KEY": "bench-secret-key",
            "MAILHUB_ENCRYPTION_KEYS": "3q1cXn7Wl3oH6f3m8m4zK8H4m0QO4t8s6QnXb7q2J2U=",
            "MAILHUB_DATA_DIR": data_dir,
            "DATABASE_URL": database_url or f"sqlite:///{data_dir}/bench.sqlite3",
            "LOG_LEVEL": "WARNING",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if database_url:
        # A server database: work in a fresh one ("test_<name>", migrated), dropped at the end.
        connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    else:
        call_command("migrate", verbosity=0)


def teardown_django(database_url: str | None) -> None:
    from django.db import connection

    if database_url:
        connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


def seed_mailbox(mailbox, count: int, rng: random.Random, *, start_uid: int) -> None:
    from django.db import transaction
    from django.utils import timezone

    from mailboxes.models import Email

    now = timezone.now()
    batch = []
    for n in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(40, 120))]
        if n % 100 == 7:
            words.insert(rng.randrange(len(words)), RARE_NAME.capitalize())
        if n % 2 == 0:
            words.insert(rng.randrange(len(words)), COMMON_WORD)
        body = " ".join(words).capitalize() + "."
        batch.append(
            Email(
                mailbox=mailbox,
                uidvalidity=1,
                uid=start_uid + n,
                message_id=f"<bench-{mailbox.pk}-{n}@customer.example>",
                subject=f"{rng.choice(WORDS).capitalize()} {rng.choice(WORDS)} #{n}",
                from_name=f"Customer {n % 5000}",
                from_address=f"customer{n % 5000}@example.com",
                received_at=now - timedelta(minutes=count - n),
                text_body=body,
                has_attachments=n % 4 == 0,
                raw=f"raw/bench-{mailbox.pk}-{n}.eml",
                size=len(body),
                content_sha256=hashlib.sha256(body.encode()).hexdigest(),
                identity=hashlib.sha256(f"{mailbox.pk}-{n}".encode()).hexdigest(),
                processing_status="done",
            )
        )
        if len(batch) == 5000:
            with transaction.atomic():
                Email.objects.bulk_create(batch)
            batch = []
    with transaction.atomic():
        Email.objects.bulk_create(batch)


def median_ms(client, url: str, params: dict, *, runs: int = RUNS, check=None) -> float:
    response = client.get(url, params)
    if response.status_code != 200:
        raise RuntimeError(f"{url} {params} answered {response.status_code}")
    if check is not None:
        check(response)
    for _ in range(3):  # warm up caches (SQLite pages, template loader, ...)
        client.get(url, params)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        client.get(url, params)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def full_page(response) -> None:
    if len(listed(response)) != PAGE_SIZE:
        raise RuntimeError(f"the page shows {len(listed(response))} emails, not {PAGE_SIZE}")


def listed(response) -> list[int]:
    import re

    return [int(pk) for pk in re.findall(r'data-email-id="(\d+)"', response.content.decode())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=100_000)
    parser.add_argument("--database-url", help="default: a fresh SQLite file under var/")
    parser.add_argument(
        "--postgres", action="store_true", help="start a throwaway PostgreSQL cluster (initdb) and use it"
    )
    args = parser.parse_args()
    if args.postgres:
        from tests.servers import PostgresServer

        with PostgresServer() as server:
            args.database_url = server.url
            run(args)
    else:
        run(args)


def run(args: argparse.Namespace) -> None:
    deep_page = args.emails // PAGE_SIZE  # the last page: 4,000 at 100,000 emails

    # The SQLite file lives where the product keeps it (var/), not in /tmp: see bench/ingest.py.
    (REPO / "var").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-web-", dir=REPO / "var") as data_dir:
        setup_django(data_dir, args.database_url)
        from django.contrib.auth.models import User
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        from mailboxes.models import Email, Mailbox
        from mailboxes.services.visits import mailbox_view_choose
        from mailhub.web.emails.grid import EmailGridQuery, email_grid_cursor_at

        rng = random.Random(42)
        user = User.objects.create_user("bench", password="bench-password")
        big = Mailbox.objects.create(label="Big", email="big@example.com", imap_host="h", imap_username="u")
        small = Mailbox.objects.create(
            label="Small", email="small@example.com", imap_host="h", imap_username="u"
        )
        others = [
            Mailbox.objects.create(
                label=f"Other {n}", email=f"o{n}@example.com", imap_host="h", imap_username="u"
            )
            for n in range(9)
        ]
        for mailbox in [big, small, *others]:
            mailbox.authorized_users.add(user)

        started = time.perf_counter()
        print(f"seeding {args.emails:,} emails in one mailbox, 1,000 + 9 x 100 in ten more ...", flush=True)
        seed_mailbox(big, args.emails, rng, start_uid=1)
        seed_mailbox(small, 1000, rng, start_uid=1)
        for mailbox in others:
            seed_mailbox(mailbox, 100, rng, start_uid=1)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        print(f"seeded in {time.perf_counter() - started:.0f} s ({connection.vendor})\n", flush=True)

        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        url = "/emails/"

        def choose(mailbox) -> None:
            mailbox_view_choose(user=user, mailbox=mailbox)

        def cursor_of_page(mailbox, page: int, size: int) -> str:
            return email_grid_cursor_at(
                user=user, mailbox_ids=[mailbox.pk], query=EmailGridQuery(), position=(page - 1) * size
            )

        # -- queries per page ----------------------------------------------------------------
        choose(big)
        print("SQL queries per grid page (whole request: session, user, selectors, page)")
        counts = {}
        for size in (25, 100):
            last_page = args.emails // size
            for page in (1, last_page):
                params = {"per_page": size}
                if page > 1:
                    params.update(after=cursor_of_page(big, page, size), page=page)
                with CaptureQueriesContext(connection) as queries:
                    response = client.get(url, params)
                assert len(listed(response)) == size
                counts[size, page > 1] = len(queries.captured_queries)
                if os.environ.get("BENCH_SHOW_SQL"):
                    print("\n".join(q["sql"][:160] for q in queries.captured_queries))
                print(f"  {size:>3} rows, page {page:>5}: {len(queries.captured_queries)} queries")
        flat_queries = counts[25, False] == counts[100, False] and counts[25, True] == counts[100, True]
        flat_queries = flat_queries and counts[25, True] <= counts[25, False]
        print("  (page 1 also records the visit for the 'new' counts: one upsert, in its transaction)\n")

        # -- times ---------------------------------------------------------------------------
        page = {"per_page": PAGE_SIZE}
        choose(small)
        baseline = median_ms(client, url, page, check=full_page)
        choose(big)
        oldest = list(
            Email.objects.filter(mailbox=big)
            .order_by("received_at", "pk")
            .values_list("pk", flat=True)[:PAGE_SIZE]
        )

        def deep_check(response) -> None:
            if listed(response) != list(reversed(oldest)):
                raise RuntimeError("page 4,000 is not the oldest 25 emails")

        deep = {"per_page": PAGE_SIZE, "after": cursor_of_page(big, deep_page, PAGE_SIZE), "page": deep_page}
        rare_matches = Email.objects.filter(mailbox=big, text_body__icontains=RARE_NAME).count()
        common_matches = Email.objects.filter(mailbox=big, text_body__icontains=f" {COMMON_WORD}").count()
        results = [
            ("big: first page", median_ms(client, url, page, check=full_page), None),
            (f"big: page {deep_page:,} (the oldest 25)", median_ms(client, url, deep, check=deep_check), 2.0),
            (
                f"big: search '{RARE_NAME}' ({rare_matches:,} match)",
                median_ms(client, url, {**page, "q": RARE_NAME}, check=full_page),
                2.0,
            ),
            (
                f"big: search '{COMMON_WORD}' (~{common_matches:,} match)",
                median_ms(client, url, {**page, "q": COMMON_WORD}, check=full_page),
                2.0,
            ),
            (
                f"big: search '{RARE_NAME} {COMMON_WORD}'",
                median_ms(client, url, {**page, "q": f"{RARE_NAME} {COMMON_WORD}"}, check=full_page),
                2.0,
            ),
            ("big: search a word found nowhere", median_ms(client, url, {**page, "q": "qwxzv"}), 2.0),
        ]
        choose(None)
        all_deep = {
            "per_page": PAGE_SIZE,
            "page": deep_page,
            "after": email_grid_cursor_at(
                user=user, mailbox_ids=None, query=EmailGridQuery(), position=(deep_page - 1) * PAGE_SIZE
            ),
        }
        results += [
            ("all 11 mailboxes: first page", median_ms(client, url, page, check=full_page), None),
            (
                f"all 11 mailboxes: page {deep_page:,}",
                median_ms(client, url, all_deep, check=full_page),
                None,
            ),
        ]
        choose(big)
        for sort in ("sender", "subject"):
            sorted_page = {**page, "sort": sort}
            results.append(
                (f"big: sorted by {sort}", median_ms(client, url, sorted_page, check=full_page), None)
            )
            deep_sorted = {
                **sorted_page,
                "page": deep_page,
                "after": email_grid_cursor_at(
                    user=user,
                    mailbox_ids=[big.pk],
                    query=EmailGridQuery(sort=sort, descending=False),
                    position=(deep_page - 1) * PAGE_SIZE,
                ),
            }
            results.append(
                (
                    f"big: sorted by {sort}, page {deep_page:,}",
                    median_ms(client, url, deep_sorted, check=full_page),
                    None,
                )
            )

        print(
            f"Median of {RUNS} requests, {PAGE_SIZE} rows per page ('big': the {args.emails:,}-email mailbox)"
        )
        print(f"  {'baseline: first page of the 1,000-email mailbox':<52} {baseline:7.2f} ms   1.00x")
        missed = []
        for label, ms, target in results:
            ratio = ms / baseline
            verdict = ""
            if target is not None:
                verdict = f"  (target <= {target:.0f}x: {'ok' if ratio <= target else 'MISSED'})"
                if ratio > target:
                    missed.append(label)
            print(f"  {label:<52} {ms:7.2f} ms  {ratio:5.2f}x{verdict}")
        print()
        print(f"queries flat: {'ok' if flat_queries else 'MISSED'}")
        teardown_django(args.database_url)
        if missed or not flat_queries:
            print("targets missed: " + ", ".join(missed or ["query count"]))
            sys.exit(1)
        print("all targets met")


if __name__ == "__main__":
    main()
