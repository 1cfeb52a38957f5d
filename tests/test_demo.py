"""`demo/run.py --check`: the whole product on real servers from a fresh data dir, in one run.

The demo runs in a subprocess with its own database (no `db` fixture) and its own data dir under
tmp_path, so it never touches var/demo/ of someone running `make demo` at the same time. The
expected numbers are computed here from the messages the demo appends: its own messages are
fixed (6 for Support, 4 for Sales), the corpus part is counted with the product's pure parser
and identity function.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from demo.run import fallback_corpus, sales_messages, support_messages
from mailboxes.parsing import parse_email
from mailboxes.services.storing import message_identity
from tests.corpus import corpus_files
from tests.servers import require_binary
from tests.servers.common import LOCALHOST, free_port, port_is_open

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]

# What the demo's own messages must give (see demo/run.py, support_messages / sales_messages).
DEMO_SUPPORT = {
    "emails": 6,
    "replies": 1,  # Anna's "Re:" joins her first case
    "cases": 5,
    "sent": 2,  # Anna's first request and Marco's
    "suppressed": 3,  # an out-of-office (Auto-Submitted), a newsletter (Precedence), Anna again
}
DEMO_SALES = {"emails": 4, "leads": 3}  # Jonas writes twice: his follow-up joins his open lead


def _distinct_and_replies(messages: list[bytes]) -> tuple[int, int]:
    """Messages stored (distinct identities) and, among them, replies to an earlier stored one."""
    identities, message_ids, replies = set(), set(), 0
    for raw in messages:
        parsed = parse_email(raw)
        identity = message_identity(raw, parsed.message_id)
        if identity in identities:
            continue
        identities.add(identity)
        replies += bool({parsed.in_reply_to, *parsed.references} & message_ids - {""})
        if parsed.message_id:
            message_ids.add(parsed.message_id)
    return len(identities), replies


def test_demo_check_runs_the_whole_flow(tmp_path):
    require_binary("/usr/sbin/dovecot", "dovecot-imapd")
    corpus = [path.read_bytes() for path in corpus_files()] or fallback_corpus()
    assert len(support_messages()) == DEMO_SUPPORT["emails"]
    assert len(sales_messages()) == DEMO_SALES["emails"]
    distinct_corpus, corpus_replies = _distinct_and_replies(corpus)
    distinct_support, _ = _distinct_and_replies(corpus + support_messages())
    # The demo's own messages are new (not duplicates of the corpus).
    assert distinct_support == distinct_corpus + DEMO_SUPPORT["emails"]
    duplicates = len(corpus) - distinct_corpus
    port = free_port()
    data_dir = tmp_path / "demo"

    completed = subprocess.run(
        [sys.executable, "demo/run.py", "--check", "--port", str(port), "--data-dir", str(data_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    [summary_line] = [line for line in completed.stdout.splitlines() if line.startswith("DEMO-SUMMARY ")]
    summary = json.loads(summary_line.removeprefix("DEMO-SUMMARY "))
    actual, expected = summary["actual"], summary["expected"]

    appended_support = len(corpus) + DEMO_SUPPORT["emails"]
    assert summary["appended"] == {"Support": appended_support, "Sales": DEMO_SALES["emails"]}
    # Every appended message stored once, duplicates recognised (same ones as computed here).
    assert expected["duplicates"] == duplicates
    assert actual["emails_support"] == appended_support - duplicates
    assert actual["emails_sales"] == DEMO_SALES["emails"]
    assert actual["emails"] == appended_support + DEMO_SALES["emails"] - duplicates
    assert (actual["emails_history"], actual["emails_unprocessed"], actual["emails_failed"]) == (0, 0, 0)
    # Every Support email is in a case: a new case each, except replies, which join theirs.
    replies = corpus_replies + DEMO_SUPPORT["replies"]
    assert actual["emails_joining_cases"] == expected["replies"] == replies
    assert actual["cases"] == expected["cases"] == distinct_corpus - corpus_replies + DEMO_SUPPORT["cases"]
    assert actual["support_emails_without_case"] == 0
    assert actual["leads"] == expected["leads"] == DEMO_SALES["leads"]
    # Auto-replies: one decision per new case; what was sent (AutoReply rows 'sent') is exactly
    # what the SMTP sink received and printed.
    assert actual["auto_replies_sent"] + actual["auto_replies_suppressed"] == actual["cases"]
    assert actual["auto_replies_sent"] >= DEMO_SUPPORT["sent"]
    assert actual["auto_replies_sent"] == expected["auto_replies_sent"] == actual["smtp_received"]
    assert actual["auto_replies_suppressed"] == expected["auto_replies_suppressed"]
    assert actual["auto_replies_suppressed"] >= DEMO_SUPPORT["suppressed"]
    assert (actual["auto_replies_failed"], actual["auto_replies_in_flight"]) == (0, 0)
    printed = [line for line in completed.stdout.splitlines() if line.startswith("    auto-reply -> ")]
    assert len(printed) == actual["auto_replies_sent"]
    assert "    auto-reply -> anna.schmidt@kunde-a.example: [#" in completed.stdout
    reasons = actual["suppression_reasons"]
    assert {"rate limit", "Auto-Submitted", "Precedence"} <= set(reasons)
    assert sum(reasons.values()) == actual["auto_replies_suppressed"]

    # Its own data dir, and nothing left running: the web port is free again.
    assert (data_dir / "mailhub.sqlite3").is_file()
    assert "2 mailbox(es): 2 ok" in completed.stdout
    assert not port_is_open(LOCALHOST, port)
