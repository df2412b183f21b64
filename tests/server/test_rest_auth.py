"""REST authentication with access-key JWTs (spec 2.1), against the running service.

Every refusal must be a 401 with an ``ErrorDetail`` body and ``x-ms-error-code``; every
token shape an SDK (or a reasonable hand-written client) produces must be accepted.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import ACCESS_KEY, SECONDARY_KEY
from tests.server.helpers import (
    API_VERSION,
    assert_error_detail,
    forge_token,
    http,
    rest_url,
    sign,
    sign_rest,
)
from webpubsub.testing import ServiceThread

SKEW = 300  # seconds of clock skew the service tolerates (spec 2.1 [E])


def send_path(hub: str) -> str:
    return f"/api/hubs/{hub}/:send"


def post_send(
    service: ServiceThread,
    hub: str,
    authorization: str | None,
    *,
    url: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a text message to the hub with exactly this Authorization header (or none)."""
    all_headers = {"Content-Type": "text/plain", **(headers or {})}
    if authorization is not None:
        all_headers["Authorization"] = authorization
    return http().post(url or rest_url(service, send_path(hub)), content=b"hi", headers=all_headers)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def now() -> int:
    return int(time.time())


# -- refusals -----------------------------------------------------------------------------


def test_missing_authorization_header(service: ServiceThread, hub: str) -> None:
    assert_error_detail(post_send(service, hub, None), 401)


@pytest.mark.parametrize(
    "scheme",
    ["Basic dXNlcjpwYXNz", "Token {token}", "{token}", "Bearer", "SharedAccessKey {token}"],
)
def test_non_bearer_scheme(service: ServiceThread, hub: str, scheme: str) -> None:
    token = sign_rest(rest_url(service, send_path(hub)))
    assert_error_detail(post_send(service, hub, scheme.format(token=token)), 401)


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b.c",
        "a.b",
        "eyJhbGciOiJIUzI1NiJ9..",
        "!!!.???.###",
        "e30.e30.",  # {} . {} with an empty signature
    ],
)
def test_malformed_token(service: ServiceThread, hub: str, token: str) -> None:
    assert_error_detail(post_send(service, hub, bearer(token)), 401)


def test_token_with_tampered_payload(service: ServiceThread, hub: str) -> None:
    url = rest_url(service, send_path(hub))
    header, _, signature = sign_rest(url).split(".")
    _, payload, _ = sign_rest(url, lifetime=99999).split(".")
    assert_error_detail(post_send(service, hub, bearer(f"{header}.{payload}.{signature}")), 401)


def test_expired_beyond_skew(service: ServiceThread, hub: str) -> None:
    url = rest_url(service, send_path(hub))
    token = sign({"aud": url, "exp": now() - SKEW - 60}, ACCESS_KEY)
    assert_error_detail(post_send(service, hub, bearer(token)), 401)


def test_not_yet_valid_beyond_skew(service: ServiceThread, hub: str) -> None:
    url = rest_url(service, send_path(hub))
    token = sign({"aud": url, "nbf": now() + SKEW + 60, "exp": now() + 3600}, ACCESS_KEY)
    assert_error_detail(post_send(service, hub, bearer(token)), 401)


def test_wrong_key(service: ServiceThread, hub: str) -> None:
    url = rest_url(service, send_path(hub))
    token = sign_rest(url, "some-other-key-0123456789abcdefghijklmnop")
    assert_error_detail(post_send(service, hub, bearer(token)), 401)


def test_key_must_not_be_base64_decoded(service: ServiceThread, hub: str) -> None:
    """The HMAC key is the key string's UTF-8 bytes, not its base64 decoding (spec 2.1)."""
    decoded = base64.b64decode(ACCESS_KEY + "=" * (-len(ACCESS_KEY) % 4), altchars=b"-_")
    claims = {"aud": rest_url(service, send_path(hub)), "exp": now() + 60}
    token = forge_token({"alg": "HS256", "typ": "JWT"}, claims, decoded)
    assert_error_detail(post_send(service, hub, bearer(token)), 401)


def test_audience_of_another_hub(service: ServiceThread, hub: str) -> None:
    token = sign_rest(rest_url(service, send_path(hub + "_other")))
    assert_error_detail(post_send(service, hub, bearer(token)), 401)


@pytest.mark.parametrize(
    "other_path",
    [
        "/api/hubs/{hub}/users/u1/:send",
        "/api/hubs/{hub}/groups/g1/:send",
        "/api/hubs/{hub}/:closeConnections",
        "/api/hubs/{hub}",
        "/api/hubs/{hub}/:send/extra",
        "/api/health",
    ],
)
def test_audience_of_another_operation(service: ServiceThread, hub: str, other_path: str) -> None:
    token = sign_rest(rest_url(service, other_path.format(hub=hub)))
    assert_error_detail(post_send(service, hub, bearer(token)), 401)


def test_token_for_one_operation_does_not_authorize_another(
    service: ServiceThread, hub: str
) -> None:
    """A token minted for send-to-all must not close connections (same hub, same host)."""
    token = sign_rest(rest_url(service, send_path(hub)))
    response = http().post(
        rest_url(service, f"/api/hubs/{hub}/:closeConnections"),
        headers={"Authorization": bearer(token)},
    )
    assert_error_detail(response, 401)


@pytest.mark.parametrize(
    "origin",
    [
        "http://example.com:{port}",
        "http://127.0.0.2:{port}",
        "http://127.0.0.1:{other_port}",
        "http://127.0.0.1",
        "https://127.0.0.1:{port}",
        "ws://example.com:{port}",
    ],
)
def test_audience_of_another_host(service: ServiceThread, hub: str, origin: str) -> None:
    port = service.settings.port
    other = origin.format(port=port, other_port=port + 1 if port < 65535 else port - 1)
    token = sign_rest(rest_url(service, send_path(hub), endpoint=other))
    assert_error_detail(post_send(service, hub, bearer(token)), 401)


def test_audience_missing(service: ServiceThread, hub: str) -> None:
    assert_error_detail(post_send(service, hub, bearer(sign({"exp": now() + 60}))), 401)


@pytest.mark.parametrize("audience", ["", "not a url", "/api/hubs/x/:send", 12345])
def test_audience_not_a_url(service: ServiceThread, hub: str, audience: Any) -> None:
    token = sign({"aud": audience, "exp": now() + 60})
    assert_error_detail(post_send(service, hub, bearer(token)), 401)


def test_alg_none(service: ServiceThread, hub: str) -> None:
    claims = {"aud": rest_url(service, send_path(hub)), "exp": now() + 60}
    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "None"}, {"alg": "NONE"}):
        token = forge_token(header, claims, key=None)
        assert_error_detail(post_send(service, hub, bearer(token)), 401)


@pytest.mark.parametrize(
    ("alg", "digest"),
    [
        ("RS256", hashlib.sha256),  # HMAC bytes under an RSA header: algorithm confusion
        ("HS512", hashlib.sha512),  # a correct HS512 signature with the right key
        ("HS384", hashlib.sha384),
        ("ES256", hashlib.sha256),
    ],
)
def test_algorithm_other_than_hs256(
    service: ServiceThread, hub: str, alg: str, digest: Any
) -> None:
    claims = {"aud": rest_url(service, send_path(hub)), "exp": now() + 60}
    token = forge_token({"alg": alg, "typ": "JWT"}, claims, ACCESS_KEY, digest)
    assert_error_detail(post_send(service, hub, bearer(token)), 401)


def test_token_without_exp(service: ServiceThread, hub: str) -> None:
    url = rest_url(service, send_path(hub))
    assert_error_detail(post_send(service, hub, bearer(sign({"aud": url}))), 401)
    token = sign({"aud": url, "iat": now(), "nbf": now()})
    assert_error_detail(post_send(service, hub, bearer(token)), 401)


@pytest.mark.parametrize("exp", ["tomorrow", None, [1], {"t": 1}])
def test_exp_not_a_number(service: ServiceThread, hub: str, exp: Any) -> None:
    token = sign({"aud": rest_url(service, send_path(hub)), "exp": exp})
    assert_error_detail(post_send(service, hub, bearer(token)), 401)


def test_oversized_token(service: ServiceThread, hub: str) -> None:
    """A validly signed 20 KB token (under the header limit) is refused as too long."""
    token = sign_rest(rest_url(service, send_path(hub)), padding="x" * 20_000)
    assert 16 * 1024 < len(token) < 30 * 1024
    assert_error_detail(post_send(service, hub, bearer(token)), 401)


def test_token_of_one_key_with_signature_of_another(service: ServiceThread, hub: str) -> None:
    url = rest_url(service, send_path(hub))
    head, payload, _ = sign_rest(url, ACCESS_KEY).split(".")
    _, _, other_signature = sign_rest(url, SECONDARY_KEY, lifetime=61).split(".")
    assert_error_detail(post_send(service, hub, bearer(f"{head}.{payload}.{other_signature}")), 401)


def test_head_operation_refused_without_body(service: ServiceThread, hub: str) -> None:
    """HEAD answers carry no body; the status and ``x-ms-error-code`` still say 401."""
    url = rest_url(service, f"/api/hubs/{hub}/users/u1")
    response = http().head(url)
    assert response.status_code == 401
    assert response.headers.get("x-ms-error-code")
    assert response.content == b""
    token = sign_rest(rest_url(service, f"/api/hubs/{hub}/users/u2"))
    response = http().head(url, headers={"Authorization": bearer(token)})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/hubs/{hub}/users/u1/groups/g1"),
        ("DELETE", "/api/hubs/{hub}/connections/c1"),
        ("GET", "/api/hubs/{hub}/groups/g1/connections"),
        ("POST", "/api/hubs/{hub}/:generateToken"),
        ("POST", "/api/hubs/{hub}/:addToGroups"),
        ("PUT", "/api/hubs/{hub}/permissions/sendToGroup/connections/c1"),
    ],
)
def test_every_operation_requires_a_token(
    service: ServiceThread, hub: str, method: str, path: str
) -> None:
    response = http().request(method, rest_url(service, path.format(hub=hub)))
    assert_error_detail(response, 401)


def test_health_needs_no_token(service: ServiceThread) -> None:
    assert http().head(rest_url(service, "/api/health")).status_code == 200


# -- accepted token shapes ----------------------------------------------------------------


def test_query_order_is_ignored(service: ServiceThread, hub: str) -> None:
    """JS puts api-version first, Python last; the service must accept both orders."""
    path = f"/api/hubs/{hub}/:send"
    base = service.endpoint + path
    js_style = f"{base}?api-version={API_VERSION}&excluded=a&excluded=b"
    py_style = f"{base}?excluded=a&excluded=b&api-version={API_VERSION}"
    for signed_for, sent_to in ((js_style, py_style), (py_style, js_style)):
        response = post_send(service, hub, bearer(sign_rest(signed_for)), url=sent_to)
        assert response.status_code == 202, response.text


def test_audience_without_query(service: ServiceThread, hub: str) -> None:
    token = sign_rest(service.endpoint + send_path(hub))
    assert post_send(service, hub, bearer(token)).status_code == 202


@pytest.mark.parametrize("where", ["audience", "request", "endpoint"])
def test_trailing_slash(service: ServiceThread, hub: str, where: str) -> None:
    path = send_path(hub)
    query = f"?api-version={API_VERSION}"
    plain = service.endpoint + path + query
    slashed = service.endpoint + path + "/" + query
    if where == "audience":
        response = post_send(service, hub, bearer(sign_rest(slashed)), url=plain)
    elif where == "request":
        response = post_send(service, hub, bearer(sign_rest(plain)), url=slashed)
    else:  # an endpoint configured with a trailing slash, joined naively: "//api/..."
        doubled = service.endpoint + "/" + path + query
        response = post_send(service, hub, bearer(sign_rest(doubled)), url=plain)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("suffix", ["", "/"])
def test_audience_is_the_bare_endpoint(service: ServiceThread, hub: str, suffix: str) -> None:
    token = sign_rest(service.endpoint + suffix)
    assert post_send(service, hub, bearer(token)).status_code == 202


def test_secondary_key(service: ServiceThread, hub: str) -> None:
    token = sign_rest(rest_url(service, send_path(hub)), SECONDARY_KEY)
    assert post_send(service, hub, bearer(token)).status_code == 202


def test_js_style_claims(service: ServiceThread, hub: str) -> None:
    """``@azure/web-pubsub``: ``iat``, ``exp`` one hour ahead, ``aud``."""
    url = rest_url(service, send_path(hub))
    token = sign({"iat": now(), "exp": now() + 3600, "aud": url})
    assert post_send(service, hub, bearer(token)).status_code == 202


def test_python_style_claims(service: ServiceThread, hub: str) -> None:
    """``azure-messaging-webpubsubservice``: ``aud``, ``exp`` +60 s, no ``iat``, name claim."""
    url = rest_url(service, send_path(hub))
    token = sign(
        {
            "aud": url,
            "exp": now() + 60,
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name": "admin",
        }
    )
    assert post_send(service, hub, bearer(token)).status_code == 202


def test_dotnet_style_claims(service: ServiceThread, hub: str) -> None:
    """``Azure.Messaging.WebPubSub``: ``nbf``, ``exp``, ``iat``, ``aud``."""
    url = rest_url(service, send_path(hub))
    token = sign({"nbf": now(), "exp": now() + 300, "iat": now(), "aud": url})
    assert post_send(service, hub, bearer(token)).status_code == 202


def test_fractional_exp(service: ServiceThread, hub: str) -> None:
    """NumericDate values may be fractional (RFC 7519 2)."""
    token = sign({"aud": rest_url(service, send_path(hub)), "exp": time.time() + 60.5})
    assert post_send(service, hub, bearer(token)).status_code == 202


def test_audience_as_list(service: ServiceThread, hub: str) -> None:
    url = rest_url(service, send_path(hub))
    token = sign({"aud": ["https://elsewhere.example/api", url], "exp": now() + 60})
    assert post_send(service, hub, bearer(token)).status_code == 202


@pytest.mark.parametrize(
    "claims",
    [
        {"exp_offset": -240},  # expired four minutes ago
        {"nbf_offset": 240},  # valid in four minutes
        {"iat_offset": 240},  # issued "in the future" by a fast clock
    ],
    ids=["exp", "nbf", "iat"],
)
def test_four_minutes_of_clock_skew(service: ServiceThread, hub: str, claims: Any) -> None:
    url = rest_url(service, send_path(hub))
    body: dict[str, Any] = {"aud": url, "exp": now() + claims.get("exp_offset", 60)}
    if "nbf_offset" in claims:
        body["nbf"] = now() + claims["nbf_offset"]
    if "iat_offset" in claims:
        body["iat"] = now() + claims["iat_offset"]
    assert post_send(service, hub, bearer(sign(body))).status_code == 202


def test_scheme_is_case_insensitive(service: ServiceThread, hub: str) -> None:
    token = sign_rest(rest_url(service, send_path(hub)))
    for scheme in ("bearer", "BEARER"):
        assert post_send(service, hub, f"{scheme} {token}").status_code == 202


def test_hub_casing_in_audience(service: ServiceThread, hub: str) -> None:
    """Hub names are case-insensitive, also inside ``aud`` (SDKs keep the caller's casing)."""
    token = sign_rest(rest_url(service, send_path(hub.upper())))
    assert post_send(service, hub, bearer(token)).status_code == 202
    token = sign_rest(rest_url(service, send_path(hub)))
    url = rest_url(service, send_path(hub.upper()))
    assert post_send(service, hub, bearer(token), url=url).status_code == 202


def test_host_casing_in_audience(service: ServiceThread, hub: str) -> None:
    """Python keeps ``LOCALHOST`` casing in ``aud``; hosts compare case-insensitively."""
    port = service.settings.port
    url = f"http://LOCALHOST:{port}{send_path(hub)}?api-version={API_VERSION}"
    response = post_send(
        service, hub, bearer(sign_rest(url)), headers={"Host": f"LOCALHOST:{port}"}
    )
    assert response.status_code == 202, response.text


def test_percent_encoded_ids(service: ServiceThread, hub: str) -> None:
    """``aud`` carries the path as sent (``user%201``), the service compares it decoded once."""
    path = f"/api/hubs/{hub}/users/{quote('user 1/x', safe='')}/:send"
    url = rest_url(service, path)
    response = post_send(service, hub, bearer(sign_rest(url)), url=url)
    assert response.status_code == 202, response.text


def test_unknown_extra_claims_are_ignored(service: ServiceThread, hub: str) -> None:
    token = sign_rest(rest_url(service, send_path(hub)), iss="me", sub="x", role=["a"], jti="1")
    assert post_send(service, hub, bearer(token)).status_code == 202
