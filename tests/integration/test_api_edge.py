"""The API edge over real HTTP: versions, signing, errors, rate and concurrency
limits, and keypair isolation (API.md sections 1–4)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bai.manager.keypairs import Keypair
from tests.apiclient import SignedClient
from tests.conftest import RunningServer
from tests.manual_clock import driving

pytestmark = pytest.mark.sandbox


_opened: list[SignedClient] = []


@pytest.fixture
def api(bai_server) -> Iterator[SignedClient]:
    client = SignedClient(bai_server.endpoint, bai_server.access_key, bai_server.secret_key)
    yield client
    client.close()
    while _opened:
        _opened.pop().close()


def client_for(api: SignedClient, access_key: str, secret_key: str) -> SignedClient:
    """A client closed when the test ends."""
    client = SignedClient(api.endpoint, access_key, secret_key)
    _opened.append(client)
    return client


def new_keypair(api: SignedClient, **limits: object) -> SignedClient:
    body = {"user_id": f"u-{uuid.uuid4().hex[:6]}", **limits}
    created = api.post("/admin/keypairs", body)
    assert created.status_code == 201, created.text
    data = created.json()
    return client_for(api, data["access_key"], data["secret_key"])


def slug(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return str(response.json()["type"]).rsplit("/", 1)[-1]


def test_root_is_open_and_names_the_version(api: SignedClient) -> None:
    r = httpx.get(api.endpoint + "/")
    assert r.status_code == 200
    assert r.json()["version"] == "v8.20240915"
    assert r.headers["server"].startswith("BackendAI")


def test_auth_test_echoes_and_reports_rate_headers(api: SignedClient) -> None:
    r = api.post("/auth/test", {"echo": "hello"})
    assert r.json() == {"authorized": "yes", "echo": "hello"}
    assert r.headers["x-ratelimit-window"] == "900"
    assert int(r.headers["x-ratelimit-remaining"]) < int(r.headers["x-ratelimit-limit"])
    assert api.post("/v8/auth", {"echo": "prefixed"}).json()["echo"] == "prefixed"


def test_wrong_secret_is_auth_failed(api: SignedClient) -> None:
    bad = client_for(api, api.access_key, "x" * 40)
    assert bad.post("/auth/test", {"echo": "x"}).status_code == 401
    unknown = client_for(api, "AKIA" + "Z" * 16, api.secret_key)
    r = unknown.post("/auth/test", {"echo": "x"})
    assert (r.status_code, slug(r)) == (401, "auth-failed")


def test_tampered_path_is_auth_failed(api: SignedClient) -> None:
    headers = api.headers("GET", "/session", b"", None)
    r = api.http.get("/session/whatever", headers=headers)
    assert slug(r) == "auth-failed"


def test_clock_skew_is_invalid_auth_params(api: SignedClient) -> None:
    r = api.post("/auth/test", {"echo": "x"}, date=datetime.now(UTC) - timedelta(minutes=16))
    assert (r.status_code, slug(r)) == (400, "invalid-auth-params")
    assert "15 minutes" in r.json()["msg"]
    assert api.post("/auth/test", {"echo": "x"}, date=datetime.now(UTC) - timedelta(minutes=14)).status_code == 200


def test_the_date_window_is_on_the_managers_clock(api: SignedClient, bai_server: RunningServer) -> None:
    """A request's Date is judged against the manager's clock (driven here, not the
    system's): within 900 s of its now either way, and the window moves with it."""
    with driving(bai_server.server.manager.clock, utc=True) as clock:
        now = clock.utc()
        for offset_s, status in ((-901, 400), (-899, 200), (899, 200), (901, 400)):
            r = api.post("/auth/test", {"echo": "x"}, date=now + timedelta(seconds=offset_s))
            assert r.status_code == status, (offset_s, r.text)
            if status == 400:
                assert slug(r) == "invalid-auth-params" and "15 minutes" in r.json()["msg"]
        clock.advance(3600)
        assert api.post("/auth/test", {"echo": "x"}, date=now + timedelta(hours=1)).status_code == 200
        assert slug(api.post("/auth/test", {"echo": "x"}, date=now)) == "invalid-auth-params"


def test_versions(api: SignedClient) -> None:
    r = api.post("/auth/test", {"echo": "x"}, version="v99.20990101")
    assert (r.status_code, slug(r)) == (400, "generic-bad-request")
    assert "X-BackendAI-Version" in r.json()["msg"]
    r = api.http.post("/auth/test", json={"echo": "x"})
    assert slug(r) == "generic-bad-request"
    assert api.post("/auth/test", {"echo": "x"}, version="v4.20190615").status_code == 200


def test_missing_authorization_is_invalid_auth_params(api: SignedClient) -> None:
    r = api.http.post("/auth/test", json={}, headers={"X-BackendAI-Version": "v8.20240915"})
    assert (r.status_code, slug(r)) == (400, "invalid-auth-params")
    r = api.http.post("/auth/test", json={}, headers={"X-BackendAI-Version": "v8.20240915",
                                                      "Authorization": "Bearer abc"})
    assert slug(r) == "invalid-auth-params"


def test_unknown_route_and_method(api: SignedClient) -> None:
    r = api.get("/no/such/thing")
    assert (r.status_code, slug(r)) == (404, "url-not-found")
    r = api.request("PUT", "/session")
    assert (r.status_code, slug(r)) == (405, "method-not-allowed")


@pytest.mark.parametrize(("raw", "field"), [
    (b"{not json", "body"),
    (b"[1, 2]", "body"),
    (json.dumps({"image": 5}).encode(), "image"),
    (json.dumps({"image": "python", "name": "a"}).encode(), "name"),
    (json.dumps({"image": "python", "name": "has space"}).encode(), "name"),
    (json.dumps({"image": "python", "config": {"resources": {"mem": "lots"}}}).encode(), "config.resources.mem"),
    (json.dumps({"image": "python", "config": {"resources": {"cpu": 0}}}).encode(), "config.resources.cpu"),
    (json.dumps({"image": "python", "config": {"resources": {"cpu": 4096}}}).encode(), "config.resources.cpu"),
    (json.dumps({"image": "python", "config": {"environ": {"1BAD": "x"}}}).encode(), "config.environ"),
    (json.dumps({"image": "python", "config": {"environ": ["x"]}}).encode(), "config.environ"),
    (json.dumps({"image": "python", "maxWaitSeconds": -1}).encode(), "maxWaitSeconds"),
    (json.dumps({"image": "no-such-env"}).encode(), "image"),
    (json.dumps({"name": "noimage"}).encode(), "image"),
])
def test_bad_create_bodies_name_the_field(api: SignedClient, raw: bytes, field: str) -> None:
    r = api.request("POST", "/session", raw=raw)
    assert (r.status_code, slug(r)) == (400, "invalid-api-params"), r.text
    assert field in r.json()["msg"]


def test_unknown_session_is_object_not_found(api: SignedClient) -> None:
    for r in (api.get("/session/nope-nope"), api.delete("/session/nope-nope"),
              api.post("/session/nope-nope", {"mode": "query", "code": "1"}),
              api.post("/session/nope-nope/interrupt")):
        assert (r.status_code, slug(r)) == (404, "object-not-found")
        assert r.json()["title"] == "No such session."


def test_legacy_v2_kernel_create_with_body_hash(api: SignedClient) -> None:
    name = f"legacy-{uuid.uuid4().hex[:6]}"
    r = api.post("/v2/kernel/create", {"lang": "python", "clientSessionToken": name}, version="v2.20170315")
    assert r.status_code == 201, r.text
    assert r.json()["kernelId"] == name
    out = api.post(f"/v2/kernel/{name}", {"mode": "query", "code": "print(6*7)"}, version="v2.20170315")
    assert out.json()["result"]["console"] == [["stdout", "42\n"]]
    assert api.delete(f"/v2/kernel/{name}", version="v2.20170315").status_code == 200


def test_rate_limit(api: SignedClient) -> None:
    limited = new_keypair(api, rate_limit=3)
    codes = [limited.post("/auth/test", {"echo": "x"}).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    r = limited.post("/auth/test", {"echo": "x"})
    assert (r.status_code, slug(r)) == (429, "rate-limit-exceeded")
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert r.headers["x-ratelimit-limit"] == "3"


def test_concurrency_limit(api: SignedClient) -> None:
    user = new_keypair(api, concurrency_limit=1)
    first = user.post("/session", {"image": "python", "name": "only-one"})
    assert first.status_code == 201, first.text
    r = user.post("/session", {"image": "python", "name": "second-one"})
    assert (r.status_code, slug(r)) == (412, "quota-exceeded")
    assert user.delete("/session/only-one").status_code == 200
    assert user.post("/session", {"image": "python", "name": "second-one"}).status_code == 201
    user.delete("/session/second-one")


def test_keypairs_cannot_touch_each_others_sessions(api: SignedClient) -> None:
    alice, bob = new_keypair(api), new_keypair(api)
    created = alice.post("/session", {"image": "python", "name": "alices"}).json()
    for target in ("alices", created["sessionId"]):
        assert slug(bob.get(f"/session/{target}")) == "object-not-found"
        assert slug(bob.post(f"/session/{target}", {"mode": "query", "code": "1"})) == "object-not-found"
        assert slug(bob.delete(f"/session/{target}")) == "object-not-found"
    r = bob.get(f"/session/alices?owner_access_key={alice.access_key}")
    assert (r.status_code, slug(r)) == (403, "insufficient-privilege")
    # bob may use the same name for his own session
    assert bob.post("/session", {"image": "python", "name": "alices"}).status_code == 201
    assert api.get(f"/session/alices?owner_access_key={alice.access_key}").status_code == 200
    alice.delete("/session/alices")
    bob.delete("/session/alices")


def test_deactivated_keypair_is_refused(api: SignedClient) -> None:
    user = new_keypair(api)
    assert user.post("/auth/test", {"echo": "x"}).status_code == 200
    assert api.post(f"/admin/keypairs/{user.access_key}/deactivate").status_code == 200
    r = user.post("/auth/test", {"echo": "x"})
    assert (r.status_code, slug(r)) == (401, "auth-failed")
    assert api.post(f"/admin/keypairs/{user.access_key}/activate").status_code == 200
    assert user.post("/auth/test", {"echo": "x"}).status_code == 200


def test_admin_routes_need_an_admin(api: SignedClient) -> None:
    user = new_keypair(api)
    r = user.get("/admin/keypairs")
    assert (r.status_code, slug(r)) == (403, "insufficient-privilege")
    r = api.post("/admin/keypairs", {"concurrency_limit": "many"})
    assert slug(r) == "invalid-api-params" and "concurrency_limit" in r.json()["msg"]


def test_a_keypair_with_an_expiry_works_until_then(api: SignedClient) -> None:
    """The expiry itself is driven on an injected clock in tests/unit/test_manager_auth.py."""
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    created = api.post("/admin/keypairs", {"user_id": "short-lived", "expires_at": tomorrow.isoformat()})
    assert created.status_code == 201, created.text
    assert datetime.fromisoformat(created.json()["expires_at"]) == tomorrow
    user = client_for(api, created.json()["access_key"], created.json()["secret_key"])
    assert user.post("/auth/test", {"echo": "x"}).status_code == 200
    past = api.post("/admin/keypairs", {"expires_at": "2001-01-01T00:00:00Z"})
    assert slug(past) == "invalid-api-params" and "expires_at" in past.json()["msg"]


def test_an_expired_keypair_is_refused(api: SignedClient, bai_server: RunningServer) -> None:
    """A keypair made yesterday, on the manager's clock set back a day, that expired an
    hour ago: the edge refuses it as auth-failed, with no wait."""
    keypairs = bai_server.server.manager.keypairs
    yesterday = datetime.now(UTC) - timedelta(days=1)

    async def made_yesterday() -> Keypair:
        clock = keypairs.clock
        utc, clock.utc = clock.utc, lambda: yesterday
        try:
            return await keypairs.create(user_id="expired", is_admin=False, concurrency_limit=1, rate_limit=10,
                                         expires_at=datetime.now(UTC) - timedelta(hours=1))
        finally:
            clock.utc = utc

    keypair: Keypair = bai_server.call(made_yesterday())
    user = client_for(api, keypair.access_key, keypair.secret_key)
    r = user.post("/auth/test", {"echo": "x"})
    assert (r.status_code, slug(r)) == (401, "auth-failed")
    assert "expired" in r.json()["msg"]
