"""mailhub settings: everything comes from the environment (or an optional `.env` file).

Every variable is documented in README.md ("Configuration"). Two modes share this file:
- embedded (nothing set but the secrets `make run` generates): SQLite, filesystem Celery broker;
- production (`DATABASE_URL`, `REDIS_URL` set): PostgreSQL, Redis, any number of workers.
"""

from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# An optional .env next to manage.py; real environment variables win over it.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

# Writable state of the embedded mode: SQLite database, stored emails, broker queue.
DATA_DIR = Path(env.str("MAILHUB_DATA_DIR", default=str(BASE_DIR / "var")))

INSECURE_DEV_SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=INSECURE_DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == INSECURE_DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. Set SECRET_KEY (or DEBUG=true for local development); "
        "`make run` writes a generated one to .env."
    )

# Fernet keys (comma-separated) that encrypt mailbox passwords at rest. The first one encrypts,
# all of them decrypt: prepend a new key, run `manage.py rotate_mailbox_secrets`, then drop the old.
MAILHUB_ENCRYPTION_KEYS = env.list("MAILHUB_ENCRYPTION_KEYS", default=[])
if not MAILHUB_ENCRYPTION_KEYS and not DEBUG:
    raise ImproperlyConfigured(
        "MAILHUB_ENCRYPTION_KEYS is not set: mailbox passwords could not be encrypted. "
        "Generate one with `python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())'`."
    )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    # Bottom to top: each app imports only the ones above it in this list (an import-linter
    # contract in pyproject.toml checks it).
    "mailboxes",
    "autoresponse",
    "processing",
    "mailhub",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads a request body (CSRF reads the form): files are not bounded by Django.
    "mailhub.web.request_size.RequestSizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mailhub.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "mailhub.wsgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'mailhub.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded mode must work on a fresh clone: SQLite can't create its folder itself.
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL lets the web process read while a worker writes; the busy timeout makes concurrent
    # writers wait for the lock instead of failing at once with "database is locked".
    # The same SQLite, handing the write lock over fairly between processes (two workers).
    DATABASES["default"]["ENGINE"] = "mailhub.sqlite_backend"
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(DATA_DIR / "media")))
MEDIA_URL = "media/"  # never served directly: attachments go through access-checked views
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "SAMEORIGIN"
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Outgoing mail of the product itself (password resets); auto-responses use each mailbox's SMTP.
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="mailhub@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Celery -------------------------------------------------------------------------------
# With REDIS_URL (or CELERY_BROKER_URL) set, workers on many hosts share one Redis broker.
# Without it, the embedded mode uses kombu's filesystem transport under DATA_DIR: no service to
# install, one host only; the task code is the same.
REDIS_URL = env.str("REDIS_URL", default="")
# The host is ignored by the filesystem transport; without one kombu warns in every process.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://localhost/")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = DATA_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "queue"),
        "data_folder_out": str(_queue_dir / "queue"),
        "processed_folder": str(_queue_dir / "processed"),
        # Without this kombu writes a control/ folder into the current directory.
        "control_folder": str(_queue_dir / "control"),
        # kombu looks for new messages once a second by default: one task per second per worker.
        "polling_interval": 0.1,
        "store_processed": False,
    }
else:
    # A task whose worker died is handed to another worker after this long (Redis transport).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # a task whose worker is killed mid-run is delivered again
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=15 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=14 * 60)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "dispatch-mailbox-polls": {
        "task": "mailboxes.dispatch_due_polls",
        "schedule": env.float("MAILHUB_DISPATCH_EVERY", default=15.0),
    },
}

# --- mailhub ------------------------------------------------------------------------------
# Network timeout (seconds) of one IMAP or SMTP operation.
MAILHUB_NETWORK_TIMEOUT = env.float("MAILHUB_NETWORK_TIMEOUT", default=30.0)
# Seconds to wait for the SMTP server's reply after the end of a message (the final "."): RFC 5321
# §4.5.3.2.6 asks for 10 minutes, since servers scan the message before answering. Giving up
# sooner leaves an outcome nobody knows (the server may have accepted), which is never retried.
MAILHUB_SMTP_DATA_TIMEOUT = env.float("MAILHUB_SMTP_DATA_TIMEOUT", default=600.0)
# Optional path to a PEM bundle of extra CA certificates, trusted for IMAP/SMTP TLS in addition
# to the system CAs: for mail servers with certificates from a private (company) CA. Certificates
# and host names are always verified; empty = system CAs only.
MAILHUB_TLS_CA_FILE = env.str("MAILHUB_TLS_CA_FILE", default="")
# One UID FETCH asks for at most this many bytes (by RFC822.SIZE) or messages; a larger message
# is fetched alone. Each batch commits with the advanced UID cursor.
MAILHUB_FETCH_BATCH_BYTES = env.int("MAILHUB_FETCH_BATCH_BYTES", default=8 * 1024 * 1024)
MAILHUB_FETCH_BATCH_MESSAGES = env.int("MAILHUB_FETCH_BATCH_MESSAGES", default=200)
# A message the server keeps listing (UID SEARCH) but never delivers (no BODY[] in FETCH) holds
# the UID cursor before it for this many polls, each reported as a transient error; then it is
# stored as a placeholder email ("server did not deliver this message") and passed over.
MAILHUB_UNDELIVERED_MAX_POLLS = env.int("MAILHUB_UNDELIVERED_MAX_POLLS", default=3)
# A poll holds its mailbox for this long, renewed at every batch; a dead worker's lease expires.
MAILHUB_POLL_LEASE_SECONDS = env.int("MAILHUB_POLL_LEASE_SECONDS", default=300)
# A processing step (email to process, auto-reply to send) still pending this long after it was
# created lost its task (worker killed, broker restarted): the next poll enqueues it again.
MAILHUB_REQUEUE_PENDING_AFTER = env.int("MAILHUB_REQUEUE_PENDING_AFTER", default=300)
# Answers of staff: how many one user may send per hour (a stolen session or a runaway script
# can't turn a shared mailbox into a spam cannon), and the total size of an answer's attachments.
MAILHUB_ANSWERS_PER_USER_PER_HOUR = env.int("MAILHUB_ANSWERS_PER_USER_PER_HOUR", default=100)
MAILHUB_ANSWER_MAX_BYTES = env.int("MAILHUB_ANSWER_MAX_BYTES", default=25 * 1024 * 1024)
# Longest wait between two attempts on a failing mailbox (exponential backoff up to this).
MAILHUB_POLL_BACKOFF_MAX = env.int("MAILHUB_POLL_BACKOFF_MAX", default=3600)

# --- IMAP IDLE push (mailhub/idle.py, `manage.py run_idle_supervisor`) ---------------------
# One supervisor process holds an IDLE connection (RFC 2177) per active mailbox whose server
# offers IDLE, and enqueues that mailbox's poll when the server reports new mail.
# IDLE is ended (DONE) and issued again after this many seconds: RFC 2177 §3 lets servers drop
# a client idling for 30 minutes ("re-issue at least every 29 minutes"); 25 leaves margin.
MAILHUB_IDLE_RENEW_SECONDS = env.float("MAILHUB_IDLE_RENEW_SECONDS", default=25 * 60)
# No byte from the server for this long (Dovecot says "* OK Still here" every 2 minutes) and the
# connection is probed with DONE; unanswered within MAILHUB_NETWORK_TIMEOUT it is dead (a NAT
# that dropped it silently), dropped and reconnected with backoff.
MAILHUB_IDLE_DEAD_AFTER = env.float("MAILHUB_IDLE_DEAD_AFTER", default=180.0)
# While a mailbox's IDLE is live, its regular poll only runs this often (the safety net).
MAILHUB_IDLE_SAFETY_POLL_SECONDS = env.int("MAILHUB_IDLE_SAFETY_POLL_SECONDS", default=900)
# The supervisor re-reads the active mailboxes (added, deactivated, changed in the admin) and
# renews its IDLE leases this often; a lease lasts MAILHUB_IDLE_LEASE_SECONDS (a dead
# supervisor's mailboxes are taken over by another one after at most that long).
MAILHUB_IDLE_REFRESH_SECONDS = env.float("MAILHUB_IDLE_REFRESH_SECONDS", default=30.0)
MAILHUB_IDLE_LEASE_SECONDS = env.int("MAILHUB_IDLE_LEASE_SECONDS", default=120)
# First wait before reconnecting a dropped IDLE connection, doubled per failure up to
# MAILHUB_POLL_BACKOFF_MAX (with jitter, so the mailboxes of a restarted server spread out).
MAILHUB_IDLE_RECONNECT_FIRST = env.float("MAILHUB_IDLE_RECONNECT_FIRST", default=2.0)
# Polls the supervisor runs at once when it polls in its own process (--inline, no broker).
MAILHUB_IDLE_INLINE_POLLS = env.int("MAILHUB_IDLE_INLINE_POLLS", default=4)
# --- OAuth2 mailboxes (Microsoft 365, Google; README "Microsoft 365 and Google") ---------------
# The application registered with each provider; a mailbox's OAuth2 connection may carry its own
# client id and secret instead. Secrets without defaults: they come from the environment only.
MAILHUB_OAUTH_MICROSOFT_CLIENT_ID = env.str("MAILHUB_OAUTH_MICROSOFT_CLIENT_ID", default="")
MAILHUB_OAUTH_MICROSOFT_CLIENT_SECRET = env.str("MAILHUB_OAUTH_MICROSOFT_CLIENT_SECRET", default="")
MAILHUB_OAUTH_GOOGLE_CLIENT_ID = env.str("MAILHUB_OAUTH_GOOGLE_CLIENT_ID", default="")
MAILHUB_OAUTH_GOOGLE_CLIENT_SECRET = env.str("MAILHUB_OAUTH_GOOGLE_CLIENT_SECRET", default="")
# Microsoft's endpoints are <authority>/<tenant>/oauth2/v2.0/{authorize,token}: always the
# mailbox's tenant, never /common. Overridable (sovereign clouds: login.microsoftonline.us; tests).
MAILHUB_OAUTH_MICROSOFT_AUTHORITY = env.str(
    "MAILHUB_OAUTH_MICROSOFT_AUTHORITY", default="https://login.microsoftonline.com"
)
MAILHUB_OAUTH_GOOGLE_AUTHORIZATION_URL = env.str(
    "MAILHUB_OAUTH_GOOGLE_AUTHORIZATION_URL", default="https://accounts.google.com/o/oauth2/v2/auth"
)
MAILHUB_OAUTH_GOOGLE_TOKEN_URL = env.str(
    "MAILHUB_OAUTH_GOOGLE_TOKEN_URL", default="https://oauth2.googleapis.com/token"
)
# An access token is refreshed when it expires within this many seconds (a poll or a send that
# starts with it must not see it expire halfway).
MAILHUB_OAUTH_REFRESH_MARGIN = env.int("MAILHUB_OAUTH_REFRESH_MARGIN", default=300)
# The redirect URI registered with the providers; empty:
# https://<this host>/admin/mailboxes/mailbox/oauth/callback/
# as the admin's browser reaches it (behind a proxy that rewrites the host, set it).
MAILHUB_OAUTH_REDIRECT_URI = env.str("MAILHUB_OAUTH_REDIRECT_URI", default="")

LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'plain' or 'json', not {LOG_FORMAT!r}")
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        # One JSON object per line (time, level, logger, message and the `extra=` fields).
        "json": {"()": "mailhub.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
if CELERY_BROKER_URL.startswith("filesystem://") and LOG_LEVEL != "DEBUG":
    # The embedded mode's console (`make run`) is read by a person: quiet unless something
    # happened. Beat sending the dispatcher, the worker receiving it and its "succeeded" line
    # would repeat every MAILHUB_DISPATCH_EVERY seconds, and an empty poll every poll interval;
    # warnings, errors, polls that found mail or failed still show. LOG_LEVEL=DEBUG shows all.
    LOGGING["filters"] = {"skip_empty_polls": {"()": "mailhub.logging.SkipEmptyPolls"}}
    LOGGING["loggers"] |= {
        "celery.beat": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.app.trace": {"level": "WARNING"},
        "mailhub.poll": {"filters": ["skip_empty_polls"]},
    }
# Celery replaces the root logger's handlers in the worker with its own plain-text ones unless
# told not to; with JSON logs the worker must keep ours so that every line is JSON.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
