"""A write and its side effects commit together or not at all, whatever Radicale does with
the error (it swallows ValueError inside its lock and commits on exit)."""

from __future__ import annotations

import pytest

from ical import event
from server.crm_hooks import NoHooks


class Boom(NoHooks):
    def __init__(self, error: Exception) -> None:
        self.error = error

    def item_written(self, session, collection, new, old, actor, parsed=None):
        raise self.error

    def item_deleted(self, session, collection, old, actor):
        raise self.error


@pytest.mark.parametrize("error,status", [(ValueError("hook refused"), 400),
                                          (RuntimeError("hook crashed"), 500)])
def test_failing_side_effect_rolls_the_write_back(app, dav, snapshot, error, status):
    path = f"/{dav.user}/calendar/e.ics"
    assert dav.put(path, event("keep")).status == 201
    before = snapshot()
    original = app._storage.hooks
    app._storage.hooks = Boom(error)
    assert dav.put(path, event("keep", summary="changed")).status == status
    assert dav.put(f"/{dav.user}/calendar/new.ics", event("new")).status == status
    # Radicale's DELETE handler catches no ValueError: any failure there is a 500.
    assert dav.delete(path).status == 500
    app._storage.hooks = original
    assert snapshot() == before
    assert "SUMMARY:Visit" in dav.get(path).text
