"""Fixtures of the tuning tests."""

import postgres_server
import pytest


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """SQLAlchemy URL of a real PostgreSQL database, one server per session
    (the test is skipped, with the reason, where none can start)."""
    yield from postgres_server.postgres_url(tmp_path_factory)
