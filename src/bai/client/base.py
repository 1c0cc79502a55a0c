"""The marker of the SDK's async API objects.

Each ``AsyncAPI`` class has a blocking twin in bai.client.sync (``twin_of``);
tests/unit/test_client_sdk.py checks that every one of them does, method for method.
"""

from __future__ import annotations


class AsyncAPI:
    """Base of AsyncSession, AsyncComputeSession, ExecutionStream and the bound API groups."""
