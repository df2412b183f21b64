"""The audience rule and token checks of spec 2.1, without sockets."""

from __future__ import annotations

import time

import jwt
import pytest

from webpubsub.auth.tokens import TokenValidator, bearer_token, claim_list, mint_client_token
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
            ({"exp": int(time.time()) - 400}, "Error.Unauthorized.TokenExpired"),
            ({"nbf": int(time.time()) + 400}, "Error.Unauthorized.Invalid"),
        ],
    )
    def test_lifetime(self, validator: TokenValidator, claims: dict[str, int], code: str) -> None:
        with pytest.raises(Unauthorized) as raised:
            validator.decode(token(ENDPOINT, **claims))
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
