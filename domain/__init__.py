"""The service's operations (use cases): routes, the admin CLI and the worker call these.

Layering: ``api/routes`` and ``cli`` -> ``domain`` -> ``store``. A domain function takes a
``Session`` (opened at the edge: one per request, one per unit of work) and, where access matters,
the ``Caller``; it returns rows or small typed results and raises errors of ``core.errors``.
"""
