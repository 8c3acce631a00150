"""Consumers count every event by how its handler ended."""

import pytest
from faststream.exceptions import RejectMessage
from prometheus_client import REGISTRY

from contracts.broker import consumption_metered


def consumed(queue: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("events_consumed_total", {"queue": queue, "outcome": outcome})
    return value or 0.0


def test_consumption_metered_counts_each_outcome_and_reraises() -> None:
    queue = "metrics.test"
    with consumption_metered(queue):
        pass
    with pytest.raises(RejectMessage), consumption_metered(queue):
        raise RejectMessage
    with pytest.raises(ValueError, match="boom"), consumption_metered(queue):
        raise ValueError("boom")
    assert consumed(queue, "handled") == 1
    assert consumed(queue, "dead_lettered") == 1
    assert consumed(queue, "failed") == 1
