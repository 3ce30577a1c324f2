"""Distillery's knowledge-distillation engine.

A plain library: it imports neither the API nor the worker, nor any web, queue or database
package. ``core.spec`` is importable without torch; everything that trains needs torch.
"""

__version__ = "0.1.0"
