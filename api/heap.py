"""The garbage collector of a serving API process: no pause of a fifth of a second every few seconds.

CPython's collector frees what reference counting cannot (cycles) in three generations. A
collection of the oldest walks every object the process holds that can be in a cycle: in an API
process that is the whole application (FastAPI's routes and models, SQLAlchemy's mappers,
pydantic's validators, the imported modules), some 160,000-200,000 objects, and on this 2-core
machine it takes 100-200 ms with the event loop stopped. Under load it came every 10-20 s: each
young collection (every 700 allocations, hundreds of times a second at 1,500 requests/s) moves
what the requests in flight hold into an older generation, and once those moved objects are a
quarter of the old ones the full walk runs. Every request in flight, and every one that arrived
meanwhile, waited for it: that was the embedded job poll's p99 (a loop-lag monitor beside a gc
callback: every stall of 250-360 ms came with a full collection of 160-195 ms).

``settle_for_serving`` runs once the application is built, before the first request:
- a full collection, then ``gc.freeze()``: what start-up made lives as long as the process, and
  frozen objects are never walked again (the later full collections walk what came since);
- a young generation of 10,000 allocations instead of 700: the same requests in flight are
  walked 14 times less often, and 14 times less of them is moved on to the older generations,
  so the full walk comes minutes apart instead of seconds. What a young collection walks is what
  is alive (the dead are freed by reference counting already), so each one costs about the same.

Garbage cycles wait longer to be freed: up to 10,000 allocations, a few megabytes at worst. Only
the processes ``distill api`` and ``distill serve`` start call this: an application made in a
test or another program keeps the interpreter's defaults.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # CPython's default is 700


def settle_for_serving() -> None:
    """Freeze what start-up made and widen the young generation (see the module's docstring)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
