"""The small parts of `tensorgate up`: the port layout, restart backoff, Envoy's host status."""

from __future__ import annotations

import socket

import pytest

from tensorgate.balancer.admin import HostStatus
from tensorgate.balancer.backoff import Backoff
from tensorgate.balancer.ports import PortLayout, busy_ports


def test_default_layout_puts_worker_i_after_the_front_door() -> None:
    layout = PortLayout(port=8000, admin_port=9901, metrics_port=9100, workers=3)
    assert layout.worker_ports() == [8001, 8002, 8003]
    assert layout.metrics_ports() == [9100, 9101, 9102]


def test_metrics_port_0_turns_worker_metrics_off() -> None:
    layout = PortLayout(port=8000, admin_port=9901, metrics_port=0, workers=2)
    assert layout.metrics_ports() == []
    assert layout.worker_metrics_port(1) == 0


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"port": 9098, "admin_port": 9901, "metrics_port": 9100, "workers": 3}, "overlap"),
        ({"port": 8000, "admin_port": 8002, "metrics_port": 9100, "workers": 2}, "overlap"),
        ({"port": 65534, "admin_port": 9901, "metrics_port": 9100, "workers": 2}, "do not fit"),
        ({"port": 8000, "admin_port": 9901, "metrics_port": 9100, "workers": 0}, "at least one"),
    ],
)
def test_impossible_layouts_are_refused(layout: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PortLayout(**layout)


def test_busy_ports_finds_a_listening_socket() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert busy_ports([port]) == [port]
    assert busy_ports([port]) == []


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_stable_run() -> None:
    backoff = Backoff(initial=0.25, cap=2.0, stable_seconds=10.0)
    assert [backoff.next_delay(ran_for=1.0) for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert backoff.next_delay(ran_for=30.0) == 0.25


def test_host_status_reads_envoys_health_flags() -> None:
    raw = {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8001}},
        "stats": [{"name": "rq_total", "value": "42"}, {"name": "rq_error"}],
        "health_status": {"eds_health_status": "HEALTHY", "failed_active_health_check": True},
    }
    status = HostStatus.from_json(raw)
    assert (status.port, status.rq_total, status.stats["rq_error"]) == (8001, 42, 0)
    assert not status.healthy
    assert status.flags == ("failed_active_health_check",)
    raw["health_status"] = {"eds_health_status": "HEALTHY"}
    assert HostStatus.from_json(raw).healthy
