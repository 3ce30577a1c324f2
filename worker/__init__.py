"""The GPU worker: a Celery app whose task claims a job, runs the engine, and records the outcome.

Importing this package (or ``worker.celery_app``, ``worker.dispatcher``) never imports torch.
"""
