"""What README's "Security" section promises and a test can check."""

import os
import pathlib
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


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"),
                    reason="reads Linux's /proc/net/tcp")
def test_search_chief_binds_only_the_address_it_is_given(tmp_path):
    # keras-tuner's oracle service has no authentication: the chief must
    # listen on the address given (here loopback), never on all of them.
    port = free_port()
    env = {**os.environ, "KERASTUNER_TUNER_ID": "chief",
           "KERASTUNER_ORACLE_IP": "127.0.0.1",
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
    # may listen on a dual-stack socket), and nothing else: no wildcard.
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
    assert addresses and addresses <= loopback, addresses
