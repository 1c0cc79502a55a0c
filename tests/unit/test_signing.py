"""Request signing against the API.md test vectors, and the header parser."""

from __future__ import annotations

import pytest

from bai.common import signing

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DATE = "2024-01-01T00:00:00+00:00"
HOST = "127.0.0.1:8091"


@pytest.mark.parametrize("body", [b"", b'{"image": "python"}', b"anything at all"])
def test_v8_vector_ignores_the_body(body: bytes) -> None:
    sig = signing.sign(secret_key=SECRET, method="POST", path_with_query="/session", date_header=DATE,
                       host=HOST, content_type="application/json", api_version="v8.20240915", body=body)
    assert sig == "085f6ab0c6b00614b45adb224d0f85b5eb72a1c54e233b6e44f58a85af741902"


def test_v2_vector_hashes_the_body_and_signs_the_prefixed_path() -> None:
    body = b'{"lang": "python", "clientSessionToken": "abcd1234"}'
    sig = signing.sign(secret_key=SECRET, method="POST", path_with_query="/v2/kernel/create",
                       date_header=DATE, host=HOST, content_type="application/json",
                       api_version="v2.20170315", body=body)
    assert sig == "f479966a9e548b4b646feb74c24668310b511ce039f253a73e6fcad2a9e72331"
    other = signing.sign(secret_key=SECRET, method="POST", path_with_query="/v2/kernel/create",
                         date_header=DATE, host=HOST, content_type="application/json",
                         api_version="v2.20170315", body=body + b" ")
    assert other != sig


def test_content_type_parameters_do_not_matter() -> None:
    a = signing.string_to_sign(method="post", path_with_query="/x", date_header=DATE, host=HOST,
                               content_type="Application/JSON; charset=utf-8", api_version="v8.20240915",
                               body=b"")
    assert "content-type:application/json\n" in a
    assert a.startswith("POST\n")


def test_parse_authorization() -> None:
    header = signing.authorization_header("AKIAEXAMPLE", "abc123")
    assert signing.parse_authorization(header) == ("sha256", "AKIAEXAMPLE", "abc123")
    assert signing.parse_authorization(
        "Sorna signMethod=HMAC-SHA1, credential=AK:sig") == ("sha1", "AK", "sig")


@pytest.mark.parametrize("header", [
    "Bearer token",
    "BackendAI signMethod=RSA, credential=a:b",
    "BackendAI signMethod=HMAC-NOPE, credential=a:b",
    "BackendAI signMethod=HMAC-SHA256, credential=nocolon",
    "BackendAI signMethod=HMAC-SHA256",
])
def test_bad_authorization_headers_say_what_is_wrong(header: str) -> None:
    with pytest.raises(ValueError, match="Authorization"):
        signing.parse_authorization(header)


def test_dates_without_zone_are_utc() -> None:
    assert signing.parse_date("2024-01-01T00:00:00") == signing.parse_date("2024-01-01T00:00:00Z")
