"""The ``distill`` command: the engine's commands plus the service's (serve, api, worker, migrate)."""
