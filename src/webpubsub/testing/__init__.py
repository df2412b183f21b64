"""Helpers to run the service inside a test process.

``ServiceThread`` runs a complete service on a free loopback port in a background thread, so
synchronous SDKs (which block) and asyncio tests can both talk to it.
"""

from __future__ import annotations

from ._thread import ServiceThread

__all__ = ["ServiceThread"]
