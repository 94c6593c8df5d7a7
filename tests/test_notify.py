"""systemd's notification protocol (``daemon/notify.py``) and the pieces of the metrics endpoint
that need no daemon: the listen address rule, the histogram counts, disk usage."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config
from daemon.metrics import Durations, folder_bytes
from daemon.metrics_server import split_listen
from daemon.notify import Notifier, socket_address, watchdog_interval_s


def test_socket_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract") == "\0abstract"
    assert socket_address("") is None
    assert socket_address("@") is None
    assert socket_address("vsock:2:1234") is None  # a kind this module does not speak


def test_watchdog_interval_is_half_and_only_for_this_process() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}, 7) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}, 7) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}, 7) is None
    assert watchdog_interval_s({}, 7) is None


def test_a_notifier_sends_datagrams_and_takes_the_variables_out(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(5)
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000", "OTHER": "x"}
        notifier = Notifier(env)
        assert env == {"OTHER": "x"}  # no child process talks to systemd in batchd's name
        assert notifier.enabled and notifier.watchdog_s == 1.0
        assert notifier.send("READY=1", "STATUS=two\nlines")
        assert listener.recv(4096) == b"READY=1\nSTATUS=two lines"
        notifier.close()
    assert not notifier.send("WATCHDOG=1")  # the socket is gone: dropped, never raised
    assert not Notifier({}).send("READY=1")  # outside systemd: nothing


@pytest.mark.parametrize("value", ["127.0.0.1:9464", "[::1]:9464", "localhost:0"])
def test_metrics_listen_accepts_host_and_port(tmp_path: Path, value: str) -> None:
    cfg = load_config(None, {"root": str(tmp_path), "metrics_listen": value}, env={})
    assert cfg.metrics_listen == value
    assert split_listen(value)[1] == int(value.rsplit(":", 1)[1])


@pytest.mark.parametrize("value", ["9464", "127.0.0.1", "127.0.0.1:99999", "http://h:1", "h :1"])
def test_metrics_listen_refuses_what_is_not_host_and_port(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="metrics_listen"):
        load_config(None, {"root": str(tmp_path), "metrics_listen": value}, env={})


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    assert load_config(None, {"root": str(tmp_path)}, env={}).metrics_listen is None


def test_durations_are_cumulative_buckets() -> None:
    d = Durations()
    for seconds in (0.001, 0.2, 0.2, 7200.0):
        d.observe(seconds)
    buckets = dict(d.buckets())
    assert buckets["0.01"] == 1 and buckets["0.5"] == 3 and buckets["1800.0"] == 3
    assert buckets["+Inf"] == 4
    assert d.total == pytest.approx(7200.401)


def test_folder_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 5)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert folder_bytes(tmp_path) == 15
    assert folder_bytes(tmp_path / "missing") == 0
