"""Domain errors → problem+json (API.md section 3), with the one table of slugs and
statuses (bai.common.problems)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from bai.common import errors as e
from bai.common.problems import classify

PROBLEM_BASE = "https://api.backend.ai/probs/"


def problem(slug: str, status: int, title: str, msg: str, data: Any = None) -> Response:
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "msg": msg}
    if data is not None:
        body["data"] = data
    return Response(json.dumps(body), status_code=status, media_type="application/problem+json")


def problem_for(exc: e.BaiError) -> Response:
    slug, status, title = classify(exc)
    return problem(slug, status, title, exc.message, exc.data)
