"""Access-key JWTs: REST bearer tokens and client access tokens (spec 2.1, 3).

Both are HS256 tokens signed with the UTF-8 bytes of an access key. The service accepts a
token signed by any configured key (primary and secondary, for rotation without downtime).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

import jwt

from ..core.errors import Unauthorized

CLOCK_SKEW_SECONDS = 300
MAX_TOKEN_LENGTH = 16 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
HTTP_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}

CLIENT_PATHS = {
    "default": "client/hubs",
    "mqtt": "clients/mqtt/hubs",
    "socketio": "clients/socketio/hubs",
}


@dataclass(frozen=True, slots=True)
class Origin:
    """Scheme (http/https), lower-case host and port of a URL."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Origin | None:
        try:
            parts = urlsplit(url)
            scheme = HTTP_SCHEME.get(parts.scheme.lower())
            port = parts.port
        except ValueError:
            return None
        if scheme is None or not parts.hostname:
            return None
        return cls(scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme])

    @classmethod
    def from_host_header(cls, scheme: str, host: str) -> Origin | None:
        return _host_origin(scheme, host)


# Per handshake, the parsing of URLs that repeat (the Host header, a token's ``aud``) was a
# tenth of the handshake's time. The caches are bounded; ``aud`` values are only parsed once
# a token's signature checked out.
@lru_cache(maxsize=256)
def _host_origin(scheme: str, host: str) -> Origin | None:
    return Origin.parse(f"{scheme}://{host}")


@lru_cache(maxsize=1024)
def _audience_parts(audience: str) -> tuple[Origin | None, list[str]]:
    origin = Origin.parse(audience)
    return origin, _segments(urlsplit(audience).path) if origin is not None else []


def _segments(path: str) -> list[str]:
    return [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []


def _same_path(expected: list[str], actual: list[str], hub_index: int | None) -> bool:
    if len(expected) != len(actual):
        return False
    for i, (a, b) in enumerate(zip(expected, actual, strict=True)):
        if a != b and not (i == hub_index and a.lower() == b.lower()):
            return False
    return True


def _hub_index(segments: list[str]) -> int | None:
    for i, segment in enumerate(segments[:-1]):
        if segment == "hubs":
            return i + 1
    return None


@dataclass
class TokenValidator:
    """Checks access-key JWTs against the configured keys and the service's public endpoint.

    Args:
        keys: access keys; a token signed with any of them is accepted.
        public_endpoint: the URL clients and SDKs know the service by (``aud`` names it).
    """

    keys: Sequence[str]
    public_endpoint: str

    def __post_init__(self) -> None:
        self._origin = Origin.parse(self.public_endpoint)
        self._prefix = _segments(urlsplit(self.public_endpoint).path)
        self._mac_keys: tuple[str, ...] = ()
        self._macs: list[hmac.HMAC] = []

    def decode(self, token: str) -> dict[str, Any]:
        """Verify signature and lifetime (``exp`` required, ``nbf`` honoured, 5 min skew)."""
        if not token:
            raise Unauthorized("The access token is empty.", code="Error.Unauthorized.NoToken")
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("The access token is too long.", code="Error.Unauthorized.Invalid")
        claims = _plain_hs256(token, self._current_macs())
        if claims is not None:
            return claims
        return self._decode_with_pyjwt(token)

    def _current_macs(self) -> list[hmac.HMAC]:
        """HMAC states keyed once per key; the keys are reloadable in place (SIGHUP)."""
        keys = tuple(self.keys)
        if keys != self._mac_keys:
            self._macs = [hmac.new(k.encode("utf-8"), digestmod=hashlib.sha256) for k in keys]
            self._mac_keys = keys
        return self._macs

    def _decode_with_pyjwt(self, token: str) -> dict[str, Any]:
        """Every token the fast path does not accept: PyJWT decides, and names the problem."""
        last_error = "the signature does not match any access key"
        for key in self.keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key.encode("utf-8"),
                    algorithms=["HS256"],
                    leeway=CLOCK_SKEW_SECONDS,
                    options={"require": ["exp"], "verify_aud": False},
                )
                return claims
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise Unauthorized(
                    "The access token has expired.", code="Error.Unauthorized.TokenExpired"
                ) from None
            except jwt.ImmatureSignatureError:
                raise Unauthorized(
                    "The access token is not yet valid (nbf).", code="Error.Unauthorized.Invalid"
                ) from None
            except jwt.MissingRequiredClaimError as exc:
                raise Unauthorized(
                    f"The access token lacks the '{exc.claim}' claim.",
                    code="Error.Unauthorized.Invalid",
                ) from None
            except jwt.InvalidAlgorithmError:
                raise Unauthorized(
                    "The access token must be signed with HS256.",
                    code="Error.Unauthorized.Invalid",
                ) from None
            except jwt.InvalidTokenError as exc:
                last_error = str(exc) or type(exc).__name__
                break
        raise Unauthorized(
            f"The access token is invalid: {last_error}.", code="Error.Unauthorized.Invalid"
        )

    def check_audience(
        self, claims: dict[str, Any], path: str, host: str | None, scheme: str
    ) -> None:
        """Check ``aud`` names this request: same path (hub case-insensitive, query ignored)
        on the public endpoint or on the request's own Host (spec 2.1 [I])."""
        audiences = claims.get("aud")
        if isinstance(audiences, str):
            audiences = [audiences]
        if not isinstance(audiences, list) or not audiences:
            raise Unauthorized(
                "The access token has no audience.", code="Error.Unauthorized.InvalidAudience"
            )
        actual = _segments(path)
        origins = {self._origin}
        if host:
            origins.add(_host_origin(scheme, host))
        for audience in audiences:
            if isinstance(audience, str) and self._audience_matches(audience, actual, origins):
                return
        expected = self.public_endpoint.rstrip("/") + path
        raise Unauthorized(
            "Failed to validate audience. Expected Audiences: "
            f"{expected}. Actual Audiences: {', '.join(map(str, audiences))[:500]}",
            code="Error.Unauthorized.InvalidAudience",
        )

    def _audience_matches(
        self, audience: str, actual: list[str], origins: set[Origin | None]
    ) -> bool:
        origin, aud_path = _audience_parts(audience)
        if origin is None or origin not in origins:
            return False
        if aud_path == self._prefix or not aud_path:
            return True  # the bare endpoint (some third-party clients sign that)
        hub_index = _hub_index(aud_path)
        if _same_path(aud_path, actual, hub_index):
            return True
        # Behind a proxy that strips the public endpoint's path prefix.
        prefixed = self._prefix + actual
        return _same_path(aud_path, prefixed, hub_index)

    def authenticate(self, token: str, path: str, host: str | None, scheme: str) -> dict[str, Any]:
        """Decode and audience-check a token for the request ``path``; returns its claims."""
        claims = self.decode(token)
        self.check_audience(claims, path, host, scheme)
        return claims


# The header every SDK writes; another still goes through the fast path once decoded.
_PLAIN_HEADERS = {"alg": "HS256"}, {"alg": "HS256", "typ": "JWT"}
_header_cache: dict[str, bool] = {}
_HEADER_CACHE_SIZE = 64


def _plain_hs256(token: str, macs: Sequence[hmac.HMAC]) -> dict[str, Any] | None:
    """The claims of a well-formed, valid HS256 token, or None to let PyJWT decide.

    PyJWT's general path (key checks on every call, algorithm objects, exception-driven
    claim checks) was a fifth of a handshake. This path accepts a subset of what PyJWT
    accepts: a plain header, a signature by one of the keys (constant-time comparison),
    a JSON object payload with a numeric ``exp`` in the future (5 min skew), ``nbf`` and
    ``iat`` numeric and not in the future, ``sub`` and ``jti`` strings. Anything else,
    including every invalid token, returns None and gets PyJWT's verdict and message.
    """
    if token.count(".") != 2 or not token.isascii():
        return None
    signing_input, _, signature = token.rpartition(".")
    header, _, payload = signing_input.partition(".")
    known = _header_cache.get(header)
    if known is None:
        known = _decode_segment(header) in _PLAIN_HEADERS
        if len(_header_cache) < _HEADER_CACHE_SIZE:
            _header_cache[header] = known
    if not known:
        return None
    try:
        expected = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except ValueError:
        return None
    message = signing_input.encode("ascii")
    for mac in macs:
        signer = mac.copy()
        signer.update(message)
        if hmac.compare_digest(signer.digest(), expected):
            break
    else:
        return None
    claims = _decode_segment(payload)
    if not isinstance(claims, dict) or not _plain_claims(claims, time.time()):
        return None
    return claims


def _decode_segment(segment: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError):
        return None


def _number(value: Any) -> bool:
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _plain_claims(claims: dict[str, Any], now: float) -> bool:
    exp = claims.get("exp")
    if exp is None or not _number(exp) or int(exp) <= now - CLOCK_SKEW_SECONDS:
        return False
    for name in ("nbf", "iat"):
        if name in claims:
            value = claims[name]
            if not _number(value) or int(value) > now + CLOCK_SKEW_SECONDS:
                return False
    return all(isinstance(claims.get(name, ""), str) for name in ("sub", "jti"))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <jwt>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def client_audience(endpoint: str, hub: str, client_type: str = "default") -> str:
    """``aud`` of a client access token: the http(s) URL of the client endpoint (spec 3.1)."""
    return f"{endpoint.rstrip('/')}/{CLIENT_PATHS[client_type]}/{hub}"


def client_url(endpoint: str, hub: str, client_type: str = "default") -> str:
    """The ws(s) base URL a client connects to (spec 3.1)."""
    base = client_audience(endpoint, hub, client_type)
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :]
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :]
    return base


def mint_client_token(
    key: str,
    audience: str,
    *,
    user_id: str | None = None,
    roles: Iterable[str] = (),
    groups: Iterable[str] = (),
    minutes_to_expire: float = 60,
    now: float | None = None,
) -> str:
    """Sign a client access token with the claims of spec 3.2."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "aud": audience,
        "iat": issued,
        "exp": issued + int(minutes_to_expire * 60),
    }
    if user_id:
        claims["sub"] = user_id
    roles = list(roles)
    if roles:
        claims["role"] = roles
    groups = list(groups)
    if groups:
        claims["webpubsub.group"] = groups
    return jwt.encode(claims, key.encode("utf-8"), algorithm="HS256")


def mint_rest_token(key: str, audience: str, *, lifetime_seconds: int = 3600) -> str:
    """Sign a REST bearer token for one request URL (spec 2.1)."""
    now = int(time.time())
    return jwt.encode(
        {"aud": audience, "iat": now, "exp": now + lifetime_seconds},
        key.encode("utf-8"),
        algorithm="HS256",
    )


def claim_list(claims: dict[str, Any], name: str) -> list[str]:
    """A claim that may be one string or a list of strings, as a list (spec 3.2)."""
    value = claims.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise Unauthorized(f"The '{name}' claim must be a string or a list of strings.")
