"""Real servers for integration tests: Dovecot, aiosmtpd, Redis, PostgreSQL, a cutting TCP proxy and
a local OAuth2 identity provider, plus throw-away TLS certificates and OAuth2 signing keys for them.

Each is a plain class with start()/stop() and context-manager support; tests/conftest.py wraps
them in lazily started session fixtures.
"""

from .common import ServerStartError, free_port, require_binary, wait_for_port, world_readable_tempdir
from .dovecot import PASSWORD, DovecotServer, ImapAccount
from .oauth import LocalOAuthServer, OAuthKeys
from .postgres import PostgresServer
from .proxy import CuttingTcpProxy
from .redis import RedisServer
from .smtp import ReceivedMessage, RecordingSmtpServer
from .tls import TlsFiles, generate_tls_files, session_tls_files

__all__ = [
    "PASSWORD",
    "CuttingTcpProxy",
    "DovecotServer",
    "ImapAccount",
    "LocalOAuthServer",
    "OAuthKeys",
    "PostgresServer",
    "ReceivedMessage",
    "RecordingSmtpServer",
    "RedisServer",
    "ServerStartError",
    "TlsFiles",
    "free_port",
    "generate_tls_files",
    "require_binary",
    "session_tls_files",
    "wait_for_port",
    "world_readable_tempdir",
]
