"""Scale-out: Redis broker, PostgreSQL, beat and 2 worker processes over 10 real mailboxes.

Exactly once everywhere — every email stored once, every lead/case created once, every
auto-reply sent once (counted at the SMTP server) — also while a worker is SIGKILLed mid-run and
restarted, and while Redis is restarted (losing its queue) mid-run.
"""

from collections import Counter

import pytest

from tests.scale.cluster import ScaleCluster, expected_counts

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.scale]

PER_MAILBOX = 200


@pytest.fixture
def cluster(postgres_server, redis_server, dovecot_server, smtp_server):
    cluster = ScaleCluster(
        postgres=postgres_server, redis=redis_server, dovecot=dovecot_server, smtp=smtp_server
    )
    cluster.prepare(PER_MAILBOX)
    yield cluster
    cluster.stop()
    cluster.remove_files()


def assert_exactly_once(cluster: ScaleCluster) -> None:
    expected = expected_counts(cluster.plans, PER_MAILBOX)
    counts = cluster.wait_until(
        lambda c: (
            c["emails"] == expected["emails"]
            and c["backlog"] == 0
            and c["auto_replies"] == expected["auto_replies"]
            and c["smtp_received"] >= c["auto_replies_sent"]
            and all(
                status != "pending"
                for (status,) in cluster.sql("SELECT DISTINCT status FROM autoresponse_autoreply")
            )
            # A send in progress finishes within seconds; one 'sending' longer is a killed worker's.
            and cluster.sql(
                "SELECT count(*) FROM autoresponse_autoreply WHERE status = 'sending' "
                "AND claimed_at > now() - interval '10 seconds'"
            )
            == [(0,)]
        ),
        timeout=300,
    )
    assert counts["emails"] == expected["emails"]
    assert counts["processed"] == expected["emails"]
    # No (mailbox, UID) stored twice, and every UID of every folder stored.
    assert cluster.sql("SELECT count(*) FROM (SELECT DISTINCT mailbox_id, uid FROM mailboxes_email) t") == [
        (expected["emails"],)
    ]
    assert counts["cases"] == expected["cases"]
    assert counts["leads"] == expected["leads"]
    assert cluster.sql("SELECT count(*) FROM processing_case WHERE source_email_id IS NULL") == [(0,)]
    # Every auto-reply decided once; each sent one arrived exactly once.
    assert counts["auto_replies"] == expected["auto_replies"]
    sent_ids = Counter(message.message["Message-ID"] for message in cluster.smtp.messages)
    assert all(count == 1 for count in sent_ids.values()), sent_ids.most_common(3)
    recipients = Counter(message.rcpt_tos[0] for message in cluster.smtp.messages)
    assert all(count == 1 for count in recipients.values()), recipients.most_common(3)
    assert counts["smtp_received"] == counts["auto_replies_sent"]
    # A reply whose worker was killed inside the SMTP transaction stays 'sending' (it becomes
    # 'uncertain' once stale): never resent, so at most once. Every other one was sent.
    statuses = dict(cluster.sql("SELECT status, count(*) FROM autoresponse_autoreply GROUP BY status"))
    interrupted = statuses.get("sending", 0) + statuses.get("uncertain", 0)
    assert counts["auto_replies_sent"] + interrupted == expected["auto_replies"], statuses


def test_two_workers_store_process_and_answer_exactly_once(cluster):
    cluster.start_beat()
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    cluster.activate()
    assert_exactly_once(cluster)
    assert (
        cluster.counts()["auto_replies_sent"] == expected_counts(cluster.plans, PER_MAILBOX)["auto_replies"]
    )


def test_worker_killed_and_redis_restarted_mid_run_still_exactly_once(cluster):
    cluster.start_beat()
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    cluster.activate()
    total = expected_counts(cluster.plans, PER_MAILBOX)["emails"]
    cluster.wait_until(lambda c: c["emails"] >= total * 0.3, timeout=120)
    cluster.kill_worker("w1")  # SIGKILL: no clean-up, leases and unacked tasks left behind
    cluster.start_worker("w3")
    cluster.wait_until(lambda c: c["processed"] >= total * 0.6, timeout=180)
    cluster.redis.restart()  # the queue is lost: nothing may be
    assert_exactly_once(cluster)
