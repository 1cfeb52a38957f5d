"""Production mode: gunicorn, DEBUG off, WhiteNoise static files, PostgreSQL and Redis settings."""

import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.servers.common import free_port, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def test_gunicorn_serves_pages_and_static_files_with_debug_off(postgres_server, redis_server):
    data_dir = tempfile.mkdtemp(prefix="mailhub-production-")
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "mailhub.settings",
            "DEBUG": "false",
            "SECRET_KEY": "production-test-secret",
            "MAILHUB_ENCRYPTION_KEYS": "3q1cXn7Wl3oH6f3m8m4zK8H4m0QO4t8s6QnXb7q2J2U=",
            "DATABASE_URL": postgres_server.create_database("production_smoke"),
            "REDIS_URL": redis_server.url,
            "MAILHUB_DATA_DIR": data_dir,
            "STATIC_ROOT": str(Path(data_dir) / "static"),
            "ALLOWED_HOSTS": "127.0.0.1",
        }
    )
    for command in (["migrate", "--noinput", "-v", "0"], ["collectstatic", "--noinput", "-v", "0"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=REPO, env=env, check=True, timeout=300)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "mailhub.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/admin/login/", timeout=10) as page:
            assert page.status == 200
            assert "Log in" in page.read().decode()
        with urllib.request.urlopen(f"{base}/static/admin/css/base.css", timeout=10) as css:
            assert css.status == 200
            assert css.headers["Content-Type"].startswith("text/css")
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/no-such-page/", timeout=10)
        assert missing.value.code == 404
        assert b"Traceback" not in missing.value.read()  # DEBUG is off: no debug page
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
