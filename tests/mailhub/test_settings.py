"""Production settings fail fast instead of running on defaults."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_settings(**env: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "MAILHUB_"))}
    for key in ("SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL", "LOG_FORMAT"):
        clean.pop(key, None)
    clean.update(
        env, DJANGO_SETTINGS_MODULE="mailhub.settings", MAILHUB_DATA_DIR=str(REPO / "var" / "settings-test")
    )
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('loaded')"],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SECRET_KEY is not set"),
        ({"SECRET_KEY": "s"}, "MAILHUB_ENCRYPTION_KEYS is not set"),
        ({"SECRET_KEY": "s", "MAILHUB_ENCRYPTION_KEYS": "k", "LOG_FORMAT": "xml"}, "LOG_FORMAT must be"),
    ],
)
def test_debug_off_refuses_to_start_on_defaults(env, message):
    done = load_settings(**env)
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert message in done.stderr


def test_debug_on_starts_without_secrets_and_configured_production_starts():
    assert load_settings(DEBUG="true").stdout.strip() == "loaded"
    key = "3q1cXn7Wl3oH6f3m8m4zK8H4m0QO4t8s6QnXb7q2J2U="
    assert load_settings(SECRET_KEY="s", MAILHUB_ENCRYPTION_KEYS=key).stdout.strip() == "loaded"
