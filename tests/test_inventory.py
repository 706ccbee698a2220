"""The device inventory as users write it: entries written as scalars, files saved in another
encoding, a device listed twice, and a `transport: local` device. Every mistake is exit 2 naming
the file, the device or key, and what to do."""
from __future__ import annotations

import pytest

from ecutil import run_cli

BOM_UTF16 = b"\xff\xfe"


@pytest.fixture
def inventory(tmp_path, monkeypatch):
    """Write devices.yaml (text, or bytes as saved by another editor) and point the CLI at it."""
    path = tmp_path / "devices.yaml"
    monkeypatch.setenv("EDGECOMPRESS_DEVICES", str(path))

    def write(content) -> str:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    return write


def test_an_entry_written_as_a_scalar_names_the_device_and_shows_the_form(inventory):
    path = inventory("devices:\n  lab-pi: raspberry-pi-5\n  lab-b:\n    target: host-cpu\n    host: 10.0.0.3\n")
    code, _, err = run_cli("devices", "list")
    assert code == 2, err
    assert path in err and "devices.lab-pi: 'raspberry-pi-5' is a str, not a mapping of settings" in err
    assert "target: raspberry-pi-5" in err and "\n  -> " in err and "Traceback" not in err


def test_a_latin_1_inventory_is_named_with_its_line_and_the_remedy(inventory):
    path = inventory("# Pi im B\xfcro\ndevices:\n  lab-pi:\n    target: raspberry-pi-5\n    host: 10.0.0.2\n"
                     .encode("latin-1"))
    code, _, err = run_cli("devices", "list")
    assert code == 2, err
    assert f"device inventory {path} is not UTF-8: byte 0xfc on line 1" in err
    assert "-> save it as UTF-8" in err and "Traceback" not in err


def test_a_utf16_inventory_is_named_as_such(inventory):
    path = inventory(BOM_UTF16 + "devices:\n  lab-pi:\n    target: raspberry-pi-5\n".encode("utf-16-le"))
    code, _, err = run_cli("devices", "list")
    assert code == 2 and f"device inventory {path} is saved as UTF-16" in err and "save it as UTF-8" in err, err


def test_a_utf8_bom_is_accepted(inventory):
    inventory(b"\xef\xbb\xbf" + b"devices:\n  lab-pi:\n    target: raspberry-pi-5\n    host: 10.0.0.2\n")
    code, out, err = run_cli("devices", "list")
    assert code == 0 and "lab-pi" in out, err


def test_the_same_device_twice_names_it_and_both_lines(inventory):
    path = inventory("devices:\n"
                     "  lab-pi:\n    target: raspberry-pi-5\n    host: 192.168.1.20\n"
                     "  lab-pi:\n    target: raspberry-pi-5\n    host: 192.168.1.21\n")
    code, _, err = run_cli("devices", "list")
    assert code == 2, err
    assert path in err and "'devices.lab-pi' is given twice, on lines 2 and 5" in err
    assert "\n  -> " in err


def test_a_local_device_that_names_another_machine_is_refused(inventory):
    inventory("devices:\n  mylocal:\n    target: host-cpu\n    transport: local\n    host: 10.0.0.2\n")
    code, _, err = run_cli("devices", "check", "mylocal")
    assert code == 2, err
    assert "device 'mylocal' has transport local" in err and "host" in err and "transport: ssh" in err


def test_an_inventory_path_that_is_a_folder_is_named_as_one(tmp_path, monkeypatch):
    """Review B18: a folder was reported as 'does not exist'."""
    from ecutil import run_cli

    monkeypatch.setenv("EDGECOMPRESS_DEVICES", str(tmp_path))
    code, _, err = run_cli("devices", "list")
    assert code == 2 and "is a folder, not a devices.yaml file" in err and "name the devices.yaml file itself" in err


def test_a_valid_inventory_loads_each_device_with_its_defaults(inventory):
    from edgecompress import inventory as inv

    path = inventory("devices:\n  lab-pi:\n    target: raspberry-pi-5\n    host: 10.0.0.2\n    user: pi\n"
                     "  desk:\n    target: host-cpu\n    transport: local\n")
    devices = inv.load()
    assert list(devices) == ["lab-pi", "desk"], "in the file's order"
    pi = devices["lab-pi"]
    assert (pi.name, pi.target, pi.transport, pi.host, pi.user, pi.port) == ("lab-pi", "raspberry-pi-5", "ssh",
                                                                           "10.0.0.2", "pi", None)
    assert (pi.python, pi.workdir, pi.connect_timeout_s) == ("python3", "~/.cache/edgecompress", 15.0)
    assert inv.get("desk").transport == "local" and inv.find_inventory() == inv.find_inventory(path)


def test_an_unknown_device_is_named_with_the_closest_and_every_name(inventory):
    from edgecompress import inventory as inv
    from edgecompress.errors import InputError

    inventory("devices:\n  lab-pi:\n    target: raspberry-pi-5\n    host: 10.0.0.2\n"
              "  lab-orin:\n    target: jetson-orin-nano\n    host: 10.0.0.3\n")
    with pytest.raises(InputError) as exc:
        inv.get("lab-p1")
    assert exc.value.message == "unknown device 'lab-p1'. Did you mean 'lab-pi'?"
    assert exc.value.hint == "devices in the inventory: lab-pi, lab-orin"


def test_an_ssh_device_without_a_host_and_a_misspelt_key_are_named(inventory):
    from edgecompress import inventory as inv
    from edgecompress.errors import InputError

    path = inventory("devices:\n  lab-pi:\n    target: raspberry-pi-5\n")
    with pytest.raises(InputError) as exc:
        inv.get("lab-pi")
    assert exc.value.message == "device 'lab-pi' has transport ssh but no host"
    inventory("devices:\n  lab-pi:\n    target: raspberry-pi-5\n    hots: 10.0.0.2\n")
    with pytest.raises(InputError) as typo:
        inv.load()
    assert typo.value.message == (f"device inventory {path} has 1 problem(s):\n"
                                  "  devices.lab-pi.hots: Extra inputs are not permitted. Did you mean 'host'?")
