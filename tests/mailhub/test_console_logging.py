"""The embedded mode's console: an empty, successful poll is not worth a line; anything else is."""

import logging

import pytest

from mailhub.logging import SkipEmptyPolls


def poll_record(**fields) -> logging.LogRecord:
    record = logging.LogRecord("mailhub.poll", logging.INFO, __file__, 1, "poll mailbox=1", None, None)
    values = {"new": 0, "history": 0, "duplicates": 0, "error": ""} | fields
    for name, value in values.items():
        setattr(record, name, value)
    return record


def test_an_empty_successful_poll_is_dropped():
    assert SkipEmptyPolls().filter(poll_record()) is False


@pytest.mark.parametrize(
    "fields", [{"new": 1}, {"history": 3}, {"duplicates": 2}, {"error": "IMAP connection failed: refused"}]
)
def test_a_poll_that_found_or_failed_at_something_is_kept(fields):
    assert SkipEmptyPolls().filter(poll_record(**fields)) is True


def test_other_lines_of_the_poll_logger_are_kept():
    record = logging.LogRecord(
        "mailhub.poll", logging.ERROR, __file__, 1, "poll failed on our side", None, None
    )
    assert SkipEmptyPolls().filter(record) is True
