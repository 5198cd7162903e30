"""A free loopback port for the services the tests start (Ray, SLURM, PostgreSQL), so parallel sessions and a
service someone started by hand never collide."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
