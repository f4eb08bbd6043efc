"""The event bus: every sink sees every event; a failing sink fails the emit (fail closed)."""

import pytest

from davbox.events import AccessRefused, EventBus


class Collect:
    def __init__(self):
        self.events = []

    def handle(self, event):
        self.events.append(event)


class Fail:
    def handle(self, event):
        raise OSError("disk full")


def event():
    return AccessRefused(
        actor="alice",
        mailbox="m",
        path="/x",
        operation="create",
        status=413,
        rule="r",
        reason="big",
    )


def test_every_sink_sees_every_event():
    first, second = Collect(), Collect()
    EventBus([first, second]).emit(event())
    assert len(first.events) == len(second.events) == 1
    assert first.events[0].kind == "access-refused"
    assert first.events[0].time.tzinfo is not None


def test_a_failing_sink_fails_the_emit():
    with pytest.raises(OSError):
        EventBus([Collect(), Fail()]).emit(event())
