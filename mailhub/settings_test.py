"""Settings of the test suite: the production settings with test-only secrets and fast hashing.

DATABASE_URL still wins, so `DATABASE_URL=postgres://... pytest` runs the suite on PostgreSQL.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
# A fixed Fernet key: tests must be able to decrypt what they wrote.
os.environ.setdefault("MAILHUB_ENCRYPTION_KEYS", "3q1cXn7Wl3oH6f3m8m4zK8H4m0QO4t8s6QnXb7q2J2U=")
if "MAILHUB_DATA_DIR" not in os.environ:
    # One throwaway data dir per test process (stored emails, SQLite test database), removed at exit.
    _data_dir = tempfile.mkdtemp(prefix="mailhub-test-data-")
    os.environ["MAILHUB_DATA_DIR"] = _data_dir
    atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)

from .settings import *  # noqa: F403

if DATABASES["default"]["ENGINE"] == "mailhub.sqlite_backend":  # noqa: F405
    # A file, not pytest-django's shared in-memory database: tests with threads and processes
    # need SQLite's real locking (busy timeout) to behave as in production.
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(os.environ["MAILHUB_DATA_DIR"], "test.sqlite3")}  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}
STATIC_ROOT = Path(os.environ["MAILHUB_DATA_DIR"]) / "static"
os.makedirs(STATIC_ROOT, exist_ok=True)
WHITENOISE_AUTOREFRESH = True
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
MAILHUB_NETWORK_TIMEOUT = 10.0
