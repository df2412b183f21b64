"""The audience rule and token checks of spec 2.1, without sockets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webpubsub.auth.tokens import (
    TokenValidator,
    _plain_hs256,
    bearer_token,
    claim_list,
    mint_client_token,
)
from webpubsub.core.errors import Unauthorized

KEY = "k" * 32
ENDPOINT = "http://127.0.0.1:8080"
PATH = "/api/hubs/Chat/users/user%201/:send"


def token(aud: object, key: str = KEY, **claims: object) -> str:
    body = {"aud": aud, "exp": int(time.time()) + 60, **claims}
    return jwt.encode(body, key.encode(), algorithm="HS256")


@pytest.fixture
def validator() -> TokenValidator:
    return TokenValidator([KEY, "second" * 6], ENDPOINT)


class TestAudience:
    @pytest.mark.parametrize(
        "aud",
        [
            f"{ENDPOINT}{PATH}?api-version=2024-12-01",
            f"{ENDPOINT}{PATH}?filter=x&api-version=2024-12-01",  # query ignored
            "http://127.0.0.1:8080/api/hubs/chat/users/user%201/:send",  # hub case
            f"{ENDPOINT}{PATH}/",
            f"{ENDPOINT}/",  # the bare endpoint
            "http://LOCALHOST:9000" + PATH,  # the request's own Host
        ],
    )
    def test_accepted(self, validator: TokenValidator, aud: str) -> None:
        validator.authenticate(token(aud), PATH, "localhost:9000", "http")

    @pytest.mark.parametrize(
        "aud",
        [
            f"{ENDPOINT}/api/hubs/other/users/user%201/:send",
            f"{ENDPOINT}/api/hubs/Chat/users/user%202/:send",
            f"http://evil.example.com{PATH}",
            f"https://127.0.0.1:8080{PATH}",
            "not a url",
        ],
    )
    def test_refused(self, validator: TokenValidator, aud: str) -> None:
        with pytest.raises(Unauthorized) as raised:
            validator.authenticate(token(aud), PATH, "127.0.0.1:8080", "http")
        assert raised.value.code == "Error.Unauthorized.InvalidAudience"

    def test_proxy_prefix(self) -> None:
        behind = TokenValidator([KEY], "https://example.com/pubsub")
        aud = "https://example.com/pubsub" + PATH
        behind.authenticate(token(aud), PATH, "internal:8080", "http")


class TestSignatureAndLifetime:
    def test_secondary_key(self, validator: TokenValidator) -> None:
        validator.decode(token(ENDPOINT, key="second" * 6))

    @pytest.mark.parametrize(
        ("claims", "code"),
        [
            ({"exp": -400}, "Error.Unauthorized.TokenExpired"),
            ({"nbf": 400}, "Error.Unauthorized.Invalid"),
        ],
    )
    def test_lifetime(self, validator: TokenValidator, claims: dict[str, int], code: str) -> None:
        # Offsets from now, taken now: the suite may reach this test minutes after collection.
        now = int(time.time())
        with pytest.raises(Unauthorized) as raised:
            validator.decode(token(ENDPOINT, **{k: now + v for k, v in claims.items()}))
        assert raised.value.code == code

    def test_skew_is_tolerated(self, validator: TokenValidator) -> None:
        validator.decode(token(ENDPOINT, exp=int(time.time()) - 200))

    def test_wrong_key_none_and_missing_exp(self, validator: TokenValidator) -> None:
        with pytest.raises(Unauthorized):
            validator.decode(token(ENDPOINT, key="x" * 32))
        unsigned = jwt.encode({"aud": ENDPOINT, "exp": time.time() + 60}, None, algorithm="none")
        with pytest.raises(Unauthorized):
            validator.decode(unsigned)
        with pytest.raises(Unauthorized):
            validator.decode(jwt.encode({"aud": ENDPOINT}, KEY.encode(), algorithm="HS256"))


class TestHelpers:
    def test_bearer(self) -> None:
        assert bearer_token("Bearer abc") == "abc"
        assert bearer_token("bearer  abc ") == "abc"
        assert bearer_token("Basic abc") is None
        assert bearer_token(None) is None

    def test_claim_list(self) -> None:
        assert claim_list({"role": "a"}, "role") == ["a"]
        assert claim_list({"role": ["a", "b"]}, "role") == ["a", "b"]
        assert claim_list({}, "role") == []
        with pytest.raises(Unauthorized):
            claim_list({"role": [1]}, "role")

    def test_client_token_claims(self) -> None:
        minted = mint_client_token(
            KEY,
            "http://h/client/hubs/x",
            user_id="u",
            roles=["r"],
            groups=["g"],
            minutes_to_expire=5,
            now=1000,
        )
        claims = jwt.decode(
            minted,
            KEY.encode(),
            algorithms=["HS256"],
            options={"verify_exp": False, "verify_aud": False},
        )
        assert claims == {
            "aud": "http://h/client/hubs/x",
            "iat": 1000,
            "exp": 1300,
            "sub": "u",
            "role": ["r"],
            "webpubsub.group": ["g"],
        }


# -- the HS256 fast path decides exactly as PyJWT -------------------------------------------

CLAIM_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "1", "x"]),
    st.lists(st.integers(), max_size=2),
)
TIMES = st.one_of(
    CLAIM_VALUES,
    # Around the edges: now, the 5-minute skew either side.
    st.integers(min_value=-400, max_value=400).map(lambda d: int(time.time()) + d),
)
HEADERS = st.sampled_from(
    [
        {},
        {},
        {},
        {"typ": "JWT"},
        {"typ": "JWS"},
        {"kid": "1"},
        {"kid": 1},
        {"crit": ["b64"], "b64": False},
        {"alg": "HS512"},
    ]
)
# Headers written by hand and signed with HMAC-SHA256 all the same: PyJWT refuses each
# (wrong or missing algorithm, not an object, an unknown critical extension).
HAND_HEADERS = st.sampled_from(
    [
        None,
        None,
        None,
        b'{"alg":"none"}',
        b'{"alg":"HS512"}',
        b'{"typ":"JWT"}',
        b'["alg","HS256"]',
        b'{"alg":"HS256","crit":["exp"]}',
        b'{"alg":"HS256","typ":"JWT","x":1}',
        b'{"alg":"HS256"} ',
        b"not json",
    ]
)


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def verdict(decode: Callable[[str], dict[str, object]], token: str) -> object:
    try:
        return decode(token)
    except Unauthorized as exc:
        return (exc.code, exc.message)


ABSENT = st.just(...)
# Mostly valid tokens, so that one claim or one byte off is what decides.
LATER = st.integers(min_value=301, max_value=10**6).map(lambda d: int(time.time()) + d)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@settings(max_examples=1500, deadline=None)
@given(
    exp=st.one_of(LATER, TIMES),
    nbf=st.one_of(ABSENT, ABSENT, TIMES),
    iat=st.one_of(ABSENT, ABSENT, TIMES),
    sub=st.one_of(ABSENT, st.just("user"), CLAIM_VALUES),
    jti=st.one_of(ABSENT, st.just("id"), CLAIM_VALUES),
    header=HEADERS,
    key=st.sampled_from([KEY, KEY, "second" * 6, "another key entirely"]),
    tamper=st.sampled_from(["", "", "", "", "payload", "signature", "dots"]),
    hand_header=HAND_HEADERS,
)
def test_the_fast_path_agrees_with_pyjwt(
    exp: object,
    nbf: object,
    iat: object,
    sub: object,
    jti: object,
    header: dict[str, object],
    key: str,
    tamper: str,
    hand_header: bytes | None,
) -> None:
    validator = TokenValidator([KEY, "second" * 6], ENDPOINT)
    claims = {"aud": ENDPOINT, "exp": exp}
    for name, value in (("nbf", nbf), ("iat", iat), ("sub", sub), ("jti", jti)):
        if value is not ...:
            claims[name] = value
    algorithm = str(header.get("alg", "HS256"))
    extra = {k: v for k, v in header.items() if k != "alg"}
    try:
        signed = jwt.encode(claims, key.encode(), algorithm=algorithm, headers=extra)
    except (TypeError, ValueError, OverflowError, jwt.InvalidTokenError):
        return  # PyJWT cannot even write it (NaN under allow_nan=False, and so on)
    head, payload, signature = signed.split(".")
    if hand_header is not None:
        head = base64url(hand_header)
        mac = hmac.new(key.encode(), f"{head}.{payload}".encode(), hashlib.sha256)
        signature = base64url(mac.digest())
    if tamper == "payload" and len(payload) >= 2:
        payload = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    elif tamper == "signature":
        signature = signature[::-1]
    elif tamper == "dots":
        payload += ".x"
    signed = f"{head}.{payload}.{signature}"
    assert verdict(validator.decode, signed) == verdict(validator._decode_with_pyjwt, signed)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_the_fast_path_takes_an_sdk_token_and_refuses_a_forged_one() -> None:
    validator = TokenValidator([KEY, "second" * 6], ENDPOINT)
    good = token(ENDPOINT, key="second" * 6, sub="user")
    assert _plain_hs256(good, validator._current_macs()) == jwt.decode(
        good, options={"verify_signature": False}
    )
    forged = token(ENDPOINT, key="not a configured key", sub="user")
    assert _plain_hs256(forged, validator._current_macs()) is None
    with pytest.raises(Unauthorized, match="signature"):
        validator.decode(forged)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_keys_replaced_in_place_take_effect_at_once() -> None:
    """SIGHUP rotates keys by replacing the list's items: the fast path follows."""
    keys = [KEY]
    validator = TokenValidator(keys, ENDPOINT)
    old = token(ENDPOINT, key=KEY)
    assert validator.decode(old)
    keys[:] = ["rotated" * 5]
    with pytest.raises(Unauthorized):
        validator.decode(old)
    assert validator.decode(token(ENDPOINT, key="rotated" * 5))
