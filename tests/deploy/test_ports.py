"""Loopback ports for the local servers: distinct when several are picked at once."""

from __future__ import annotations

import socket

from cvserve.deploy.ports import free_ports, port_in_use


def test_ports_picked_together_are_distinct_and_free() -> None:
    for _ in range(50):  # one pick at a time could hand the same port out twice
        ports = free_ports(3)
        assert len(set(ports)) == 3
        assert not any(port_in_use(p) for p in ports)


def test_a_listening_port_is_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert port_in_use(server.getsockname()[1])
