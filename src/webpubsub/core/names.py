"""Validation of the names the REST API and the client protocols carry (spec 1.1, 6)."""

from __future__ import annotations

import re

from .errors import BadRequest

HUB_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}")
MAX_GROUP_NAME = 1024


def check_hub(name: str) -> str:
    """Return the hub's canonical (lower-case) key, or raise BadRequest.

    Hub names are matched case-insensitively (spec 1.1, [E] lower-cases).
    """
    if not HUB_PATTERN.fullmatch(name):
        raise BadRequest(
            f"Invalid hub name '{name[:140]}': it must start with a letter and contain at most "
            "128 letters, digits or the characters _`,.[]",
            code="Error.InvalidHubName",
            target="hub",
        )
    return name.lower()


def group_name_problem(name: object, max_length: int = MAX_GROUP_NAME) -> str | None:
    """Say what is wrong with a group name, or None when it is valid (1..1024, not blank)."""
    if not isinstance(name, str):
        return "Group name must be a string."
    if not name:
        return "Group name must not be empty."
    if len(name) > max_length:
        return f"Group name is longer than {max_length} characters."
    if name.isspace():
        return "Group name must not be whitespace only."
    return None


def check_group(name: str) -> str:
    """Return the group name or raise BadRequest (group names are case-sensitive)."""
    problem = group_name_problem(name)
    if problem:
        raise BadRequest(problem, code="Error.InvalidGroupName", target="group")
    return name


def check_id(value: str, what: str) -> str:
    """Connection and user ids in paths: non-empty strings (spec 1.1)."""
    if not value:
        raise BadRequest(f"{what} must not be empty.", target=what)
    return value
