"""Run the test suite again on PostgreSQL: `python -m tests.postgres_run [pytest args]`.

Starts a throwaway cluster (initdb into a temp dir, free port, 127.0.0.1 only), points
DATABASE_URL at it before Django loads, runs pytest, and removes the cluster afterwards.
"""

import os
import sys

import pytest

from tests.servers import PostgresServer


def main() -> int:
    with PostgresServer() as server:
        os.environ["DATABASE_URL"] = server.url
        print(f"Running the suite on PostgreSQL at {server.url}", flush=True)
        return int(pytest.main(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
