"""JsonFormatter: one valid JSON object per line with the extra fields; the poll line carries them."""

import io
import json
import logging
import logging.config
from datetime import UTC, datetime

import pytest

from mailhub.logging import JsonFormatter


@pytest.fixture
def json_log():
    """A private logger writing through JsonFormatter into a buffer; returns (logger, lines())."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.json_formatter")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_one_json_object_per_line_with_extra_fields(json_log):
    logger, lines = json_log
    before = datetime.now(UTC)
    logger.info(
        "poll mailbox=%s new=%d",
        7,
        3,
        extra={"mailbox_id": 7, "mailbox": "Support", "new": 3, "duration_ms": 41, "error": ""},
    )
    logger.warning("second line\nwith a newline", extra={"ratio": 0.5, "ok": True, "none": None})

    first, second = lines()
    assert set(first) == {
        "time",
        "level",
        "logger",
        "message",
        "mailbox_id",
        "mailbox",
        "new",
        "duration_ms",
        "error",
    }
    assert (first["level"], first["logger"], first["message"]) == (
        "INFO",
        "tests.json_formatter",
        "poll mailbox=7 new=3",
    )
    assert (first["mailbox_id"], first["mailbox"], first["new"], first["duration_ms"], first["error"]) == (
        7,
        "Support",
        3,
        41,
        "",
    )
    logged_at = datetime.fromisoformat(first["time"])
    assert logged_at.utcoffset().total_seconds() == 0  # UTC
    assert first["time"].endswith("+00:00")
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= logged_at <= datetime.now(UTC)
    assert second["message"] == "second line\nwith a newline"  # escaped: still one physical line
    assert (second["level"], second["ratio"], second["ok"], second["none"]) == ("WARNING", 0.5, True, None)


def test_values_json_does_not_know_are_written_as_text(json_log):
    logger, lines = json_log
    moment = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    logger.info("odd values", extra={"when": moment, "items": {1, 2} - {2}, "path": object})

    [line] = lines()
    assert line["when"] == "2026-03-01 12:00:00+00:00"
    assert line["items"] == "{1}"
    assert line["path"] == "<class 'object'>"


def test_exception_and_colliding_extra_names(json_log):
    logger, lines = json_log
    try:
        raise ValueError("bad value")
    except ValueError:
        logger.exception("it failed", extra={"level": "custom", "time": "t"})

    [line] = lines()
    assert (line["level"], line["message"]) == ("ERROR", "it failed")
    assert (line["level_"], line["time_"]) == ("custom", "t")  # kept, renamed, never hiding the core
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert line["exc_info"].endswith("ValueError: bad value")


def test_logging_config_builds_it_from_the_dotted_path():
    """The form the LOGGING setting uses with LOG_FORMAT=json; built without touching global state
    (dictConfig itself would close every handler of the test run)."""
    configurator = logging.config.DictConfigurator({"version": 1})
    formatter = configurator.configure_formatter({"()": "mailhub.logging.JsonFormatter"})
    assert isinstance(formatter, JsonFormatter)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "configured %s", ("ok",), None)
    record.k = 1
    document = json.loads(formatter.format(record))
    assert (document["message"], document["k"]) == ("configured ok", 1)


@pytest.mark.django_db
def test_poll_log_line_carries_the_fields(caplog):
    from mailboxes.services import mailbox_poll
    from tests.factories import MailboxFactory

    # Nothing listens on port 1: the poll fails fast with a connection error, which is logged.
    mailbox = MailboxFactory(label="Support", imap_host="127.0.0.1", imap_port=1)
    with caplog.at_level(logging.INFO, logger="mailhub.poll"):
        result = mailbox_poll(mailbox_id=mailbox.pk)

    [record] = [r for r in caplog.records if r.name == "mailhub.poll"]
    assert result.error
    document = json.loads(JsonFormatter().format(record))
    assert {
        key: document[key] for key in ("mailbox_id", "mailbox", "new", "history", "duplicates", "error")
    } == {
        "mailbox_id": mailbox.pk,
        "mailbox": "Support",
        "new": 0,
        "history": 0,
        "duplicates": 0,
        "error": result.error,
    }
    assert document["duration_ms"] == round(result.duration * 1000)
    assert document["message"].startswith(f"poll mailbox={mailbox.pk} label='Support' new=0 history=0")
