"""Full answers of ``GET /v1/jobs/{id}`` and of the jobs list's pages, kept per API process by
their ETags.

A dashboard or a script that polls a job without ``If-None-Match`` asks for the same bytes again
and again; building them (the job's row, its report validated, its spec, the JSON) costs more than
the rest of the read. The answer is kept here, keyed by ``(job id, ETag)``, once built; a page of
the list by ``(PAGE, its ETag)``.

Invalidation: none is needed. The ETag is the job's version and, while it waits, its place in the
queue (``api.views.etag``); every change of a job bumps its version (``store.jobs``) and a move in
the queue changes its place, so a changed job has a new key, and the old answer is never served
again: it only waits to be pushed out. A page's ETag is a digest of its jobs' ids, versions and
places and of its next cursor (``domain.jobs.Listing.tag``): equal tags, equal pages. Nothing
caller-specific is in an answer (the same for every caller who may see the job), and what the
caller may see is decided before the cache is looked at, on every request: the job's visibility
(``domain.jobs.check_visible``), the page's keys by a query of the caller's jobs. Bounded by
bytes (``DISTILLERY_ANSWER_CACHE_BYTES``, default ``MAX_BYTES``; least recently used out first;
0 keeps nothing); an answer larger than ``MAX_ONE`` is not kept.
"""

from __future__ import annotations

import threading

from cachetools import LRUCache

MAX_BYTES = 32 * 2**20
MAX_ONE = 1 * 2**20
PAGE = "page"
"""The key of the list's pages (a job id is never this)."""


class Bodies:
    """``(job id or PAGE, ETag) -> body``, shared by the event loop and the worker threads."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_one: int = MAX_ONE) -> None:
        self._kept: LRUCache[tuple[str, str], bytes] = LRUCache(maxsize=max_bytes, getsizeof=len)
        self._max_one = min(max_one, max_bytes)
        self._lock = threading.Lock()

    def get(self, key: str, tag: str) -> bytes | None:
        with self._lock:
            return self._kept.get((key, tag))

    def put(self, key: str, tag: str, body: bytes) -> None:
        if len(body) > self._max_one or not body:  # an empty body would fit in a cache of 0 bytes
            return
        with self._lock:
            self._kept[(key, tag)] = body
