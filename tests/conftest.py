import socket

import pytest


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a torchrun rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
