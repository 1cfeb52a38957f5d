from collections.abc import Iterator

import pytest

# Real servers (logic in tests/servers). The session-scoped ones start on first use only, so a
# run that needs none of them starts nothing; all are stopped at session end.
if __package__:  # someone made tests/ a package: this module is tests.conftest
    from .servers import (
        PASSWORD,
        CuttingTcpProxy,
        DovecotServer,
        ImapAccount,
        LocalOAuthServer,
        OAuthKeys,
        PostgresServer,
        RecordingSmtpServer,
        RedisServer,
        TlsFiles,
        session_tls_files,
    )
else:  # pytest put tests/ on sys.path (rootdir conftest, no tests/__init__.py)
    from servers import (
        PASSWORD,
        CuttingTcpProxy,
        DovecotServer,
        ImapAccount,
        LocalOAuthServer,
        OAuthKeys,
        PostgresServer,
        RecordingSmtpServer,
        RedisServer,
        TlsFiles,
        session_tls_files,
    )


# The fixtures that start a real server (a Dovecot, Redis or PostgreSQL process, an aiosmtpd
# listener, a proxy in front of Dovecot). A test that requests one, directly or through another
# fixture, is marked `integration` here, so `make test-fast` (-m "not integration ...") can never
# start a server, whether or not the test file remembered the marker. Tests that start a server
# or a process themselves carry the marker in their module.
SERVER_FIXTURES = frozenset(
    {
        "dovecot_server",
        "dovecot_tls_server",
        "dovecot_oauth_server",
        "oauth_server",
        "smtp_oauth_server",
        "imap_account",
        "imap_proxy",
        "smtp_server",
        "smtp_auth_server",
        "smtp_starttls_server",
        "smtp_tls_server",
        "redis_server",
        "_redis_server_session",
        "postgres_server",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[DovecotServer]:
    with DovecotServer() as server:
        yield server


@pytest.fixture
def imap_account(dovecot_server: DovecotServer) -> ImapAccount:
    """A fresh, empty account (INBOX only) on the session's Dovecot; password PASSWORD."""
    return ImapAccount(dovecot_server, dovecot_server.new_account())


@pytest.fixture
def imap_proxy(dovecot_server: DovecotServer) -> Iterator[CuttingTcpProxy]:
    """A CuttingTcpProxy in front of Dovecot: connect to proxy.host/proxy.port to be cuttable."""
    with CuttingTcpProxy(dovecot_server.host, dovecot_server.port) as proxy:
        yield proxy


# aiosmtpd runs in-process and starts in ~2 ms: one server per test isolates messages, failure
# mode and stop/start state without any reset logic.
@pytest.fixture
def smtp_server() -> Iterator[RecordingSmtpServer]:
    with RecordingSmtpServer() as server:
        yield server


@pytest.fixture
def smtp_auth_server() -> Iterator[RecordingSmtpServer]:
    """Requires AUTH (LOGIN/PLAIN) as `smtp-user` / PASSWORD before MAIL FROM."""
    with RecordingSmtpServer(username="smtp-user", password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="session")
def tls_files() -> TlsFiles:
    """A private CA, a server certificate it signed for 127.0.0.1/localhost, an unrelated CA."""
    return session_tls_files()


@pytest.fixture(scope="session")
def dovecot_tls_server(tls_files: TlsFiles) -> Iterator[DovecotServer]:
    """A second Dovecot with TLS: STARTTLS on `.port`, implicit TLS (imaps) on `.tls_port`."""
    with DovecotServer(tls=tls_files) as server:
        yield server


@pytest.fixture(scope="session")
def oauth_keys() -> OAuthKeys:
    """The signing key shared by `oauth_server` and the OAuth2 Dovecot and SMTP servers."""
    return OAuthKeys.generate()


@pytest.fixture(scope="session")
def dovecot_oauth_server(oauth_keys: OAuthKeys) -> Iterator[DovecotServer]:
    """A Dovecot that also offers AUTH=XOAUTH2 and AUTH=OAUTHBEARER, validating JWTs signed with
    `oauth_keys` locally (username = the token's `email` claim); passwords work as usual."""
    with DovecotServer(oauth=oauth_keys) as server:
        yield server


@pytest.fixture
def oauth_server(oauth_keys: OAuthKeys) -> Iterator[LocalOAuthServer]:
    """A fresh local identity provider (no grants, zero counts) approving `user@mailhub.test`."""
    with LocalOAuthServer(oauth_keys) as server:
        yield server


@pytest.fixture
def smtp_oauth_server(oauth_keys: OAuthKeys) -> Iterator[RecordingSmtpServer]:
    """Requires AUTH before MAIL FROM: XOAUTH2 / OAUTHBEARER with a token of `oauth_keys` for
    `user@mailhub.test`, or PLAIN / LOGIN as `user@mailhub.test` / PASSWORD."""
    with RecordingSmtpServer(username="user@mailhub.test", password=PASSWORD, oauth=oauth_keys) as server:
        yield server


@pytest.fixture
def smtp_starttls_server(tls_files: TlsFiles) -> Iterator[RecordingSmtpServer]:
    """Offers STARTTLS (not required) and requires AUTH as `smtp-user` / PASSWORD."""
    with RecordingSmtpServer(username="smtp-user", password=PASSWORD, tls=tls_files) as server:
        yield server


@pytest.fixture
def smtp_tls_server(tls_files: TlsFiles) -> Iterator[RecordingSmtpServer]:
    """Implicit TLS (SMTPS) from the first byte; requires AUTH as `smtp-user` / PASSWORD."""
    with RecordingSmtpServer(
        username="smtp-user", password=PASSWORD, tls=tls_files, implicit_tls=True
    ) as server:
        yield server


@pytest.fixture(scope="session")
def _redis_server_session() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_server(_redis_server_session: RedisServer) -> RedisServer:
    """The session's Redis, running (a previous test may have stopped it) and empty."""
    _redis_server_session.start()
    _redis_server_session.flushall()
    return _redis_server_session


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
