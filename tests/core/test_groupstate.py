"""The group-state store (``core/groupstate.py``, spec-next 5), time passed in."""

from __future__ import annotations

from webpubsub.core.groupstate import GroupStates, StateItem


def test_set_clear_and_stamps() -> None:
    states = GroupStates()
    first = states.set("g", "c1", "alice", {"a": "1"}, 1000)
    assert first == StateItem("c1", "alice", {"a": "1"}, 1000)
    # The clock went back (or two changes in one millisecond): still strictly increasing.
    second = states.set("g", "c2", None, {"b": "2"}, 900)
    assert second is not None and second.updated_at == 1001
    assert [item.connection_id for item in states.snapshot("g")] == ["c1", "c2"]
    cleared = states.set("g", "c1", "alice", None, 1002)
    assert cleared == StateItem("c1", "alice", None, 1002)
    assert states.set("g", "c1", "alice", None, 1003) is None  # nothing to clear
    assert [item.connection_id for item in states.snapshot("g")] == ["c2"]


def test_subscriptions_and_forget() -> None:
    states = GroupStates()
    states.subscribe("g", "c1")
    states.subscribe("h", "c1")
    states.subscribe("g", "c2")
    states.set("g", "c1", "alice", {"a": "1"}, 5)
    states.set("h", "c1", "alice", {"a": "2"}, 6)
    assert states.watchers("g") == {"c1", "c2"}
    states.unsubscribe("g", "c2")
    assert states.watchers("g") == {"c1"}
    cleared = states.forget("c1", 7)
    assert sorted((group, item.state, item.user_id) for group, item in cleared) == [
        ("g", None, "alice"),
        ("h", None, "alice"),
    ]
    assert not states
