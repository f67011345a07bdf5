"""What README's "Security" section promises and a test can check."""

import os
import pathlib
import re
import subprocess
import sys
import time

import pytest
from tuning_test import free_port

ROOT = pathlib.Path(__file__).resolve().parents[1]


def listening(port):
    """The local addresses (hex, as /proc/net/tcp writes them) listening on
    `port`, IPv4 and IPv6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as file:
            next(file)
            for line in file:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # LISTEN
                    found.add(address)
    return found


def ipv6_loopback():
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"),
                    reason="reads Linux's /proc/net/tcp")
@pytest.mark.parametrize("address", [
    "127.0.0.1",
    # An IPv6 literal, which gRPC wants bracketed (the study does it).
    pytest.param("::1", marks=pytest.mark.skipif(
        not ipv6_loopback(), reason="no IPv6 loopback here")),
])
def test_search_chief_binds_only_the_address_it_is_given(tmp_path, address):
    # keras-tuner's oracle service has no authentication: the chief must
    # listen on the address given (here loopback), never on all of them.
    port = free_port()
    env = {**os.environ, "KERASTUNER_TUNER_ID": "chief",
           "KERASTUNER_ORACLE_IP": address,
           "KERASTUNER_ORACLE_PORT": str(port)}
    chief = subprocess.Popen(
        [sys.executable, "-m", "pipelines.tune", f"--workdir={tmp_path}",
         "--config.model.family=linear", "--config.tune.epochs=1",
         "--config.tune.batch_sizes=(32,64)", "--config.tune.seeds=(0,)",
         "--config.tune.eta0_values=(0.001,0.002,0.004)"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not listening(port) and time.monotonic() < deadline:
            assert chief.poll() is None, "the chief exited early"
            time.sleep(0.5)
        addresses = listening(port)
    finally:
        chief.kill()
        chief.wait()
    # 127.0.0.1, as IPv4 or as the IPv4-mapped IPv6 ::ffff:127.0.0.1 (gRPC
    # may listen on a dual-stack socket), or ::1, and nothing else: no
    # wildcard.
    loopback = ({"0100007F", "0000000000000000FFFF00000100007F"}
                if address == "127.0.0.1"
                else {"00000000000000000000000001000000"})
    assert addresses and addresses <= loopback, addresses


@pytest.mark.parametrize("address, port, message", [
    ("", "8000", "`KERASTUNER_ORACLE_IP` must name the chief's address"),
    ("::zz", "8000", "`KERASTUNER_ORACLE_IP` must be an IPv4 or IPv6 "
     "address or a host name. Received: KERASTUNER_ORACLE_IP='::zz'"),
    ("127.0.0.1", "http", "`KERASTUNER_ORACLE_PORT` must be a port number "
     "in [1, 65535]. Received: KERASTUNER_ORACLE_PORT='http'"),
    ("192.0.2.1", "{free}", "the chief cannot listen on "
     "KERASTUNER_ORACLE_IP='192.0.2.1'"),
])
def test_a_chief_address_that_cannot_serve_is_one_line(
        monkeypatch, address, port, message):
    from tf_temperature.studies.eta0 import driver

    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", address)
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT",
                       port.replace("{free}", str(free_port())))
    with pytest.raises(ValueError, match=re.escape(message)):
        driver.check_oracle_address()


def test_an_ipv6_literal_is_bracketed_for_grpc(monkeypatch):
    from tf_temperature.studies.eta0 import driver

    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")  # A worker.
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "::1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    driver.check_oracle_address()
    assert os.environ["KERASTUNER_ORACLE_IP"] == "[::1]"
