"""Engines: how the nodes of one service share commands and membership.

Without an engine a node is a complete in-memory service. ``RedisEngine`` makes several
nodes one service over a Redis server (``webpubsub serve --redis redis://...``).
"""
