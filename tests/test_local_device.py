"""A device with transport: local is this host under a name: its threads are capped at this host's CPUs
as bench without --device caps them, and the manifest says the figures are this host's."""
import os
from types import SimpleNamespace

from edgecompress import bench, profile
from edgecompress.summary import measured_on


def test_a_local_device_times_with_this_hosts_cpus_and_a_board_with_its_own():
    prof, _ = profile.load("raspberry-pi-5", [f"bench.threads={(os.cpu_count() or 1) + 2}"])
    local = SimpleNamespace(name="mylocal", transport="local")
    board = SimpleNamespace(name="lab-pi", transport="ssh")
    assert bench.settings_here(prof.bench, local, quiet=True).threads == (os.cpu_count() or 1)
    assert bench.settings_here(prof.bench, board, quiet=True).threads == prof.bench.threads


def test_a_local_device_is_recorded_as_this_host():
    prof, _ = profile.load("raspberry-pi-5")
    result = {"latency_ms": {"n": 5}, "host": "vm", "device": {"arch": "x86_64", "runtime_version": "1"}}
    fields = measured_on({"original": result, "compressed": result}, prof, SimpleNamespace(name="mylocal",
                                                                                           transport="local"))
    assert fields["where"] == "host" and fields["device_name"] == "mylocal"
    assert "Measured on this host as device mylocal" in fields["note"]
    board = measured_on({"original": result, "compressed": result}, prof, SimpleNamespace(name="lab-pi",
                                                                                          transport="ssh"))
    assert board["where"] == "device" and board["note"].startswith("Measured on device lab-pi")
