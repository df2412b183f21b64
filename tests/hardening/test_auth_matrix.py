"""The auth matrix beyond ``tests/server/test_{rest,client}_auth.py``: algorithm confusion,
oversized and duplicated tokens, tokens of one kind used as another, recovery hijacking and
role escalation.

REST refusals are 401 with an ``ErrorDetail`` body (431/414 when the token is too large for
the header or URL limit, before any token is read); client refusals are refused upgrades
with the same body; escalations get ``Forbidden`` acks and change nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ACCESS_KEY
from tests.hardening.support import JOIN, SEND
from tests.server.helpers import (
    JSON_SUBPROTOCOL,
    TIMEOUT,
    assert_error_detail,
    assert_refused,
    client_token,
    client_url,
    close_all,
    connect_json,
    forge_token,
    group_exists,
    refused_handshake,
    rest_call,
    rest_url,
    sign_rest,
)
from webpubsub.testing import ServiceThread


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return jwk


def hostile_tokens(claims: dict[str, Any], key: rsa.RSAPrivateKey) -> dict[str, str]:
    """Tokens carrying ``claims`` that no access key signed the way the service requires."""
    pem = public_pem(key)
    return {
        # HS256 with the attacker's public key as the HMAC secret (the classic confusion)
        "hs256_with_public_key": forge_token({"alg": "HS256", "typ": "JWT"}, claims, pem),
        # RS256 header, HMAC signature with the access key (the key "as" an RSA public key)
        "rs256_hmac_access_key": forge_token({"alg": "RS256", "typ": "JWT"}, claims, ACCESS_KEY),
        # a genuine RS256 signature by the attacker's key
        "rs256_attacker": jwt.encode(claims, key, algorithm="RS256"),
        # ...with the attacker's public key embedded for the service to "trust"
        "rs256_embedded_jwk": jwt.encode(
            claims, key, algorithm="RS256", headers={"jwk": public_jwk(key)}
        ),
        # HS256 by another key, pointing at keys elsewhere
        "hs256_kid_jku": jwt.encode(
            claims,
            b"attacker-key-0123456789abcdefghijklmnopqrst",
            algorithm="HS256",
            headers={"kid": "../../../../dev/null", "jku": "http://attacker.example/keys"},
        ),
        # the right HMAC, but the algorithm spelt differently
        "alg_lowercase": forge_token({"alg": "hs256", "typ": "JWT"}, claims, ACCESS_KEY),
        "alg_padded": forge_token({"alg": "HS256 ", "typ": "JWT"}, claims, ACCESS_KEY),
        "alg_missing": forge_token({"typ": "JWT"}, claims, ACCESS_KEY),
        # unencoded payload (RFC 7797), which the service does not implement
        "b64_false": forge_token(
            {"alg": "HS256", "b64": False, "crit": ["b64"]}, claims, ACCESS_KEY
        ),
        "empty_signature": forge_token({"alg": "HS256"}, claims, ACCESS_KEY).rsplit(".", 1)[0]
        + ".",
    }


HOSTILE = [
    "hs256_with_public_key",
    "rs256_hmac_access_key",
    "rs256_attacker",
    "rs256_embedded_jwk",
    "hs256_kid_jku",
    "alg_lowercase",
    "alg_padded",
    "alg_missing",
    "b64_false",
    "empty_signature",
]


# -- REST -----------------------------------------------------------------------------------


def post(
    service: ServiceThread, hub: str, headers: dict[str, str] | list[tuple[str, str]]
) -> httpx.Response:
    url = rest_url(service, f"/api/hubs/{hub}/:send")
    all_headers = [
        ("Content-Type", "text/plain"),
        *(headers.items() if isinstance(headers, dict) else headers),
    ]
    return httpx.post(url, content=b"x", headers=all_headers, timeout=TIMEOUT)


@pytest.mark.parametrize("kind", HOSTILE)
def test_rest_algorithm_confusion(
    service: ServiceThread, hub: str, rsa_key: rsa.RSAPrivateKey, kind: str
) -> None:
    claims = {"aud": rest_url(service, f"/api/hubs/{hub}/:send"), "exp": int(time.time()) + 60}
    token = hostile_tokens(claims, rsa_key)[kind]
    assert_error_detail(post(service, hub, {"Authorization": f"Bearer {token}"}), 401)


def test_rest_oversized_tokens(service: ServiceThread, hub: str) -> None:
    url = rest_url(service, f"/api/hubs/{hub}/:send")
    # Under the header limit: read, and refused as too long before any signature check.
    token = sign_rest(url, padding="p" * 17_000)
    assert_error_detail(post(service, hub, {"Authorization": f"Bearer {token}"}), 401)
    # Over the header limit: refused before the token is even looked at.
    token = sign_rest(url, padding="p" * 40_000)
    assert_error_detail(post(service, hub, {"Authorization": f"Bearer {token}"}), 431)


def test_rest_two_authorization_headers(service: ServiceThread, hub: str) -> None:
    """Which of two headers counts is a guess a proxy and the service may make differently."""
    good = "Bearer " + sign_rest(rest_url(service, f"/api/hubs/{hub}/:send"))
    for pair in ([good, "Bearer x"], ["Bearer x", good], [good, good]):
        response = post(service, hub, [("Authorization", value) for value in pair])
        body = assert_error_detail(response, 401)
        assert body["code"] == "Error.Unauthorized.AmbiguousToken"


def test_rest_token_in_the_query_is_not_accepted(service: ServiceThread, hub: str) -> None:
    url = rest_url(service, f"/api/hubs/{hub}/:send")
    token = sign_rest(url)
    response = httpx.post(
        f"{url}&access_token={token}",
        content=b"x",
        headers={"Content-Type": "text/plain"},
        timeout=TIMEOUT,
    )
    assert_error_detail(response, 401)


def test_client_token_is_not_a_rest_token(service: ServiceThread, hub: str) -> None:
    token = client_token(service, hub, roles=[JOIN, SEND])
    assert_error_detail(post(service, hub, {"Authorization": f"Bearer {token}"}), 401)


# -- client handshake -----------------------------------------------------------------------


async def assert_upgrade_refused(
    url: str, status: int = 401, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = await refused_handshake(url, subprotocols=[JSON_SUBPROTOCOL], headers=headers)
    return assert_refused(response, status)


@pytest.mark.parametrize("kind", HOSTILE)
async def test_client_algorithm_confusion(
    service: ServiceThread, hub: str, rsa_key: rsa.RSAPrivateKey, kind: str
) -> None:
    claims = {
        "aud": f"{service.endpoint}/client/hubs/{hub}",
        "exp": int(time.time()) + 60,
        "role": [JOIN, SEND],
    }
    token = hostile_tokens(claims, rsa_key)[kind]
    await assert_upgrade_refused(client_url(service, hub, token=token))
    await assert_upgrade_refused(
        client_url(service, hub), headers={"Authorization": f"Bearer {token}"}
    )


async def test_client_oversized_tokens(service: ServiceThread, hub: str) -> None:
    big = client_token(service, hub, padding="p" * 17_000)
    # In the query the URL limit (8 KB) answers first; in a header the token limit does.
    await assert_upgrade_refused(client_url(service, hub, token=big), 414)
    await assert_upgrade_refused(
        client_url(service, hub), headers={"Authorization": f"Bearer {big}"}
    )
    huge = client_token(service, hub, padding="p" * 40_000)
    await assert_upgrade_refused(
        client_url(service, hub), 431, headers={"Authorization": f"Bearer {huge}"}
    )


async def test_client_duplicated_tokens(service: ServiceThread, hub: str) -> None:
    good = client_token(service, hub, user_id="alice")
    other = client_token(service, hub, user_id="mallory")
    url = client_url(service, hub, token=good, query=[("access_token", other)])
    body = await assert_upgrade_refused(url)
    assert body["code"] == "Error.Unauthorized.AmbiguousToken"
    # The same token twice in the query is merely redundant.
    url = client_url(service, hub, token=good, query=[("access_token", good)])
    async with await connect_json(service, hub, url=url) as client:
        assert client.user_id == "alice"


async def test_client_token_of_another_hub_on_the_query_endpoint(
    service: ServiceThread, hub: str
) -> None:
    token = client_token(service, hub + "_a")
    url = client_url(service, hub, token=token, query=[("hub", hub)], path="/client/")
    await assert_upgrade_refused(url)


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "https://{host}/client/hubs/{hub}"},  # the right host with another scheme
        {"aud": "http://{host}/client/hubs/{hub}/extra"},
        {"aud": "http://{host}/client/hubs"},
        {"sub": ["alice", "bob"]},  # only one sub is allowed (spec 3.2)
        {"sub": 42},
        {"role": {"webpubsub.joinLeaveGroup": True}},
        {"webpubsub.group": [["nested"]]},
        {"exp": "never"},
        {"nbf": int(time.time()) + 3600},
    ],
    ids=[
        "https_aud",
        "aud_longer_path",
        "aud_shorter_path",
        "two_subs",
        "sub_number",
        "role_object",
        "group_nested",
        "exp_string",
        "nbf_future",
    ],
)
async def test_client_malformed_claims(
    service: ServiceThread, hub: str, claims: dict[str, Any]
) -> None:
    host = service.endpoint.split("://", 1)[1]
    body = {
        key: value.format(host=host, hub=hub) if isinstance(value, str) else value
        for key, value in claims.items()
    }
    token = client_token(service, hub, **body)
    body_ = await assert_upgrade_refused(client_url(service, hub, token=token), 401)
    assert body_["message"]


# -- recovery hijacking ---------------------------------------------------------------------


RELIABLE = "json.reliable.webpubsub.azure.v1"


@pytest.fixture
def victim_url(service: ServiceThread, hub: str) -> Iterator[str]:
    yield client_url(service, hub, token=client_token(service, hub, user_id="victim"))


async def test_recovery_with_a_guessed_token_is_refused(
    service: ServiceThread, hub: str, victim_url: str
) -> None:
    """Knowing a connection id is not enough to take the connection over (spec 4.7)."""
    victim = await connect_json(service, hub, url=victim_url, subprotocols=[RELIABLE])
    victim_id = victim.connection_id
    real = victim.connected["reconnectionToken"]
    for guess in ("", "x", real[:-1], real + "x", real.upper() if real.upper() != real else "y"):
        query = [("awps_connection_id", victim_id), ("awps_reconnection_token", guess)]
        url = client_url(service, hub, query=query)
        if not guess:  # without a token this is a fresh connection, which needs a JWT
            await assert_upgrade_refused(url)
            continue
        async with connect(url, subprotocols=[RELIABLE], open_timeout=TIMEOUT) as attacker:  # type: ignore[list-item]
            with pytest.raises(ConnectionClosed):
                await attacker.recv()
            assert attacker.close_code == 1008
    # The victim noticed nothing and still gets its messages.
    response = rest_call(
        service,
        "POST",
        f"/api/hubs/{hub}/users/victim/:send",
        content=b"still mine",
        content_type="text/plain",
    )
    assert response.status_code == 202
    message = await victim.receive()
    assert message["data"] == "still mine"
    await victim.close()


# -- role escalation ------------------------------------------------------------------------


def forbidden(ack: dict[str, Any]) -> bool:
    return ack.get("success") is False and ack["error"]["name"] == "Forbidden"


@pytest.mark.parametrize(
    ("role", "group"),
    [
        (f"{JOIN}.", "x"),  # an empty scope is not "every group"
        (f"{JOIN}.*", "x"),  # a literal "*" group, not a pattern (patterns use "Groups")
        (f"{JOIN}.a", "a "),
        (f"{JOIN}.a", "A"),
        (f"{JOIN}.a", "a.b"),
        ("WebPubSub.JoinLeaveGroup", "x"),  # roles are case-sensitive
        (f"{JOIN}s.", "x"),  # an empty pattern matches nothing
        (f"{JOIN}s.a*", "a.b"),  # "*" stops at dots
        (f"{SEND}", "x"),  # sending is not joining
        (f"{SEND}.x", "x"),
        (" " + JOIN, "x"),
    ],
)
async def test_join_without_the_right_role(
    service: ServiceThread, hub: str, role: str, group: str
) -> None:
    async with await connect_json(service, hub, roles=[role]) as client:
        assert forbidden(await client.join(group))
        assert forbidden(await client.leave(group))
    assert not group_exists(service, hub, group)


async def test_send_with_a_role_scoped_to_another_group(service: ServiceThread, hub: str) -> None:
    listener = await connect_json(service, hub, groups=["g1", "g1 ", "G1", "g1.x"])
    sender = await connect_json(service, hub, roles=[f"{SEND}.g1", f"{JOIN}.g2"])
    try:
        for group in ("g1 ", "G1", "g1.x", "g2", "g"):
            assert forbidden(await sender.publish(group, "no", "text"))
        assert (await sender.publish("g1", "yes", "text"))["success"]
        message = await listener.receive()
        assert (message["group"], message["data"]) == ("g1", "yes")
    finally:
        await close_all([listener, sender])


async def test_granted_permission_is_per_connection(service: ServiceThread, hub: str) -> None:
    """A REST grant to one connection of a user does not reach the user's other one."""
    first = await connect_json(service, hub, user_id="same")
    second = await connect_json(service, hub, user_id="same")
    try:
        path = f"/api/hubs/{hub}/permissions/joinLeaveGroup/connections/{first.connection_id}"
        assert rest_call(service, "PUT", path, query=[("targetName", "room")]).status_code == 200
        assert (await first.join("room"))["success"]
        assert forbidden(await second.join("room"))
    finally:
        await close_all([first, second])
