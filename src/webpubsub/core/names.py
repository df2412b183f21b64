"""The names the REST API, tokens, client frames and ``connect`` answers carry (spec 1.1, 6).

One rule for every name that enters the service, wherever it enters: group names, user ids,
connection ids, event names and roles are non-empty strings of Unicode scalar values (no lone
surrogate such as ``\\ud800``, which JSON escapes and JWT claims can carry but UTF-8 cannot
encode), without NUL, and of bounded length. A name that passes can be encoded as UTF-8
anywhere it goes later (Redis, CloudEvents headers, frames to other clients), so nothing
downstream has to guard against it. Anything else printable, non-ASCII, right-to-left or
outside the BMP is a valid name.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .errors import BadRequest

HUB_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}")
MAX_GROUP_NAME = 1024
MAX_NAME = 1024  # user ids, connection ids, event names and roles


def text_problem(value: object, what: str, max_length: int = MAX_NAME) -> str | None:
    """Say what is wrong with a name under the common rule, or None when it is valid."""
    if not isinstance(value, str):
        return f"{what} must be a string."
    if not value:
        return f"{what} must not be empty."
    if len(value) > max_length:
        return f"{what} is longer than {max_length} characters."
    if value.isascii():
        return f"{what} must not contain NUL characters." if "\0" in value else None
    if "\0" in value:
        return f"{what} must not contain NUL characters."
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} must be valid Unicode text (it holds a lone surrogate)."
    return None


@lru_cache(maxsize=1024)
def check_hub(name: str) -> str:
    """Return the hub's canonical (lower-case) key, or raise BadRequest.

    Hub names are matched case-insensitively (spec 1.1, [E] lower-cases). Valid names are
    remembered (a few hubs take every handshake); an invalid one raises, and is not.
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
    problem = text_problem(name, "Group name", max_length)
    if problem:
        return problem
    assert isinstance(name, str)
    if name.isspace():
        return "Group name must not be whitespace only."
    return None


def user_id_problem(value: object) -> str | None:
    """What is wrong with a user id (token ``sub``, ``connect`` answer, REST path), or None."""
    return text_problem(value, "User id")


def event_name_problem(value: object) -> str | None:
    """What is wrong with a user event name (``event`` frames), or None."""
    return text_problem(value, "Event name")


def role_problem(value: object) -> str | None:
    """What is wrong with a role (token ``role`` claim, ``connect`` answer, REST grant)."""
    return text_problem(value, "Role")


def check_group(name: str) -> str:
    """Return the group name or raise BadRequest (group names are case-sensitive)."""
    problem = group_name_problem(name)
    if problem:
        raise BadRequest(problem, code="Error.InvalidGroupName", target="group")
    return name


def check_id(value: str, what: str) -> str:
    """Connection and user ids in paths and queries: names under the common rule (spec 1.1)."""
    problem = text_problem(value, what)
    if problem:
        raise BadRequest(problem, target=what)
    return value
