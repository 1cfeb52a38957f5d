"""Real servers for integration tests: Dovecot, aiosmtpd, Redis, PostgreSQL and a cutting TCP proxy.

Each is a plain class with start()/stop() and context-manager support; tests/conftest.py wraps
them in lazily started session fixtures.
"""

from .common import ServerStartError, free_port, require_binary, wait_for_port, world_readable_tempdir
from .dovecot import PASSWORD, DovecotServer, ImapAccount
from .postgres import PostgresServer
from .proxy import CuttingTcpProxy
from .redis import RedisServer
from .smtp import ReceivedMessage, RecordingSmtpServer

__all__ = [
    "PASSWORD",
    "CuttingTcpProxy",
    "DovecotServer",
    "ImapAccount",
    "PostgresServer",
    "ReceivedMessage",
    "RecordingSmtpServer",
    "RedisServer",
    "ServerStartError",
    "free_port",
    "require_binary",
    "wait_for_port",
    "world_readable_tempdir",
]
