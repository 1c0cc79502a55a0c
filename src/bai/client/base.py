"""The marker of the SDK's async API objects.

The blocking API (bai.client.sync) wraps any value that is an ``AsyncAPI``
in a blocking proxy, and passes every other value (models, strings) through.
"""

from __future__ import annotations


class AsyncAPI:
    """Base of AsyncSession, AsyncComputeSession, ExecutionStream and the bound API groups."""
