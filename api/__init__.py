"""The HTTP API (FastAPI): jobs, metrics, events, artifacts, uploads, catalog, health.

The API process never imports torch: it validates specs with ``core.spec``, describes what a
spec can name with ``core.catalog``, checks uploads with torch-free format readers, and only
queues job ids; GPU workers do the rest. ``api.app.create_app`` builds the application.
"""
