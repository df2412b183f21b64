"""The official JS SDK drivers' fixtures (defined in test_js_sdk.py), for every test here."""

from .test_js_sdk import clients, js_service, rest  # noqa: F401
