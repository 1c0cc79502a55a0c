"""``GET /environments``: the environments the live agents offer, for any keypair.

Backend.AI answers this question through its GraphQL ``images`` query (each image's
``name``, ``tag``, ``installed`` and ``installed_agents``); bai has no GraphQL, so it is a
REST route of its own with the same facts, plus, where an agent knows an environment but
cannot start it, why not and how to fix it ("not built: run `bai env build ...`").
Rows as bai.manager.environments builds them; ``bai env list`` prints them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bai.common.wire import EnvironmentList
from bai.manager.api.deps import caller, manager_of


async def list_environments(request: Request) -> Response:
    await caller(request)
    offers = manager_of(request).agents.environments()
    return JSONResponse(EnvironmentList(items=offers.listing()).model_dump())
