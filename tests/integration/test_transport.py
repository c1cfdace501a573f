"""The Redis transport when its connection goes away under it."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.broker_independent


def test_a_channel_whose_connection_was_closed_fails_as_a_connection_error(app: Any) -> None:
    # What a worker's teardown meets after Redis went away: the transport's connection is
    # gone while kombu still restores unacknowledged messages through the channel. A
    # connection error is what that teardown ignores before reconnecting; anything else
    # (kombu's own AttributeError) killed the worker.
    if not app.conf.broker_url.startswith("redis"):
        pytest.skip("the Redis transport only")
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        connection.transport.client = None

        with pytest.raises(connection.connection_errors):
            channel._create_client()
