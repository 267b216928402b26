"""A real RunEngine with ophyd's simulated devices, and the documents of its runs."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import event_model
import numpy as np
import pytest
from bluesky import RunEngine
from ophyd.sim import SynSignal

from tests.documents.external import RecordingSink

Document = tuple[str, dict[str, Any]]


@pytest.fixture(scope="session")
def RE() -> RunEngine:
    """One RunEngine for the session: its loop thread lives as long as the process."""
    return RunEngine({})


@pytest.fixture
def cam() -> SynSignal:
    """An image detector: a 3 x 4 uint16 frame whose pixels all hold the count of
    frames taken before (so each event's frame is told apart)."""
    counter = itertools.count()

    def frame() -> np.ndarray:
        n = next(counter)
        return np.full((3, 4), n, dtype=np.uint16) + np.arange(12, dtype=np.uint16).reshape(3, 4)

    return SynSignal(func=frame, name="cam")


@pytest.fixture
def record(RE: RunEngine) -> Callable[..., list[Document]]:
    """``record(plan, *callbacks)``: run ``plan`` with ``callbacks`` subscribed; the
    documents it emitted, in order."""
    tokens: list[int] = []

    def run(plan: Any, *callbacks: Any) -> list[Document]:
        docs: list[Document] = []
        tokens.append(RE.subscribe(lambda name, doc: docs.append((name, doc))))
        tokens.extend(RE.subscribe(c) for c in callbacks)
        try:
            RE(plan)
        finally:
            while tokens:
                RE.unsubscribe(tokens.pop())
        return docs

    return run


def of_kind(docs: list[Document], kind: str) -> list[dict[str, Any]]:
    return [doc for name, doc in docs if name == kind]


def events(docs: list[Document], stream: str = "primary") -> list[dict[str, Any]]:
    """The events of one stream, in order."""
    uids = {d["uid"] for d in of_kind(docs, "descriptor") if d["name"] == stream}
    return [d for d in of_kind(docs, "event") if d["descriptor"] in uids]


@pytest.fixture
def run() -> event_model.ComposeRunBundle:
    return event_model.compose_run(metadata={"plan_name": "count"})


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()
