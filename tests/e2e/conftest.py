"""The running-service fixtures (tests/service.py), over both deployments."""

from tests.service import deployment, pg_database, redis_db, service

__all__ = ["deployment", "pg_database", "redis_db", "service"]
