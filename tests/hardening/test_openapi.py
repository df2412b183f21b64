"""The OpenAPI document: true to the route table, served, and fuzzed against the service.

``schemathesis`` generates requests for every operation from the document (valid ones and
invalid ones) and checks each answer: no 5xx, a documented status code, a body and headers
that match the document. The run is bounded (a few dozen examples per operation) so it
fits in CI; raise ``FUZZ_EXAMPLES`` locally for a longer one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import ACCESS_KEY
from tests.server.helpers import sign_rest
from webpubsub.server import openapi
from webpubsub.server.config import Settings
from webpubsub.server.rest import ROUTES
from webpubsub.testing import ServiceThread

DOCUMENT = openapi.document()
METHODS = ("get", "put", "post", "delete", "head", "patch", "options")
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


def documented_operations() -> dict[tuple[str, str], str]:
    """(METHOD, path template) -> operationId, as the document states them."""
    found = {}
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                found[(method.upper(), path)] = operation["operationId"]
    return found


def test_document_is_openapi_3() -> None:
    assert DOCUMENT["openapi"].startswith("3.")
    assert DOCUMENT["components"]["securitySchemes"]["AccessKey"]["scheme"] == "bearer"


def test_every_route_is_documented_and_nothing_else() -> None:
    routes = {(route.method, route.template): route for route in ROUTES}
    documented = documented_operations()
    assert set(documented) == set(routes)
    ids = list(documented.values())
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for key, route in routes.items():
        shared = sum(1 for other in ROUTES if other.operation == route.operation) > 1
        expected = f"{route.operation}_{route.method.title()}" if shared else route.operation
        if shared and route.method == "HEAD":
            expected = route.operation  # the spec's operation; the GET twin gets the suffix
        assert documented[key] == expected, key


def test_authentication_is_documented_per_route() -> None:
    for route in ROUTES:
        operation = DOCUMENT["paths"][route.template][route.method.lower()]
        open_route = operation.get("security") == []
        assert open_route == (not route.auth), route.template
        assert ("401" in operation["responses"]) == route.auth, route.template


def test_path_parameters_match_the_template() -> None:
    parameters = DOCUMENT["components"]["parameters"]
    for route in ROUTES:
        operation = DOCUMENT["paths"][route.template][route.method.lower()]
        names = set()
        for ref in operation["parameters"]:
            parameter = parameters[ref["$ref"].rsplit("/", 1)[1]]
            if parameter["in"] == "path":
                names.add(parameter["name"])
        in_template = {s[1:-1] for s in route.template.split("/") if s.startswith("{")}
        assert names == in_template, route.template


def test_document_is_served(service: ServiceThread) -> None:
    response = httpx.get(f"{service.endpoint}{openapi.PATH}", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == DOCUMENT
    response = httpx.post(f"{service.endpoint}{openapi.PATH}", timeout=5)
    assert response.status_code == 405


# -- fuzzing --------------------------------------------------------------------------------


# Two checks are tuned, everything else runs as built in:
# * a schema-valid request may also get 400, because validity is more than a schema can say:
#   an OData filter must parse (spec 1.7), a continuation token must be one we issued;
# * invalid requests are still sent (and must get a documented status, never a 5xx), but not
#   every mutation survives serialization (a number as a text/plain body is just text, an
#   object in a repeated query key is just more keys), so "it was refused" is not required.
# Unknown query parameters are allowed by design (SDKs add their own), so none are invented.
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"allow-extra-parameters": False},
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "404"]},
            "negative_data_rejection": {"enabled": False},
        },
    }
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
PLACEHOLDER = "valid-token"  # replaced by a real token when the request is sent


@schema.auth()
class AccessKeyAuth:
    """Marks every generated request as authenticated; schemathesis strips or spoils the
    mark for the cases that test missing and invalid authentication.

    Cases are generated before the service runs (its port is not known yet), so the test
    swaps the mark for a real token just before sending: see :func:`authenticate`.
    """

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return PLACEHOLDER

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def authenticate(case: schemathesis.Case, endpoint: str) -> None:
    """Put a real REST token where the auth provider left its mark.

    ``aud`` is the bare endpoint (spec 2.1 [I]): a per-request ``aud`` would need the exact
    URL the fuzzer sends; the audience rule for full URLs is tested in
    ``tests/server/test_rest_auth.py``.
    """
    headers = case.headers or {}
    if headers.get("Authorization") == f"Bearer {PLACEHOLDER}":
        headers["Authorization"] = "Bearer " + sign_rest(endpoint, lifetime=3600)


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[ServiceThread]:
    with ServiceThread(Settings(port=0, access_keys=[ACCESS_KEY])) as running:
        yield running


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_fuzz_rest_api(case: schemathesis.Case, fuzzed: ServiceThread) -> None:
    authenticate(case, fuzzed.endpoint)
    case.call_and_validate(base_url=fuzzed.endpoint, timeout=5)
