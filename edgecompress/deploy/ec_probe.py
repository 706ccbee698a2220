"""What this device offers, for `edgecompress devices check`: `python ec_probe.py`.

Prints ONE JSON line on stdout and exits 0. Standard library only, Python >= 3.8; never imports
edgecompress. Runtimes are found with importlib.util.find_spec and imported only to read their
version; power sources are asked whether they are available, none is started.

{"protocol_version": 1, "arch", "python", "python_executable", "platform", "hostname", "cpu_count",
 "runtimes": {"onnxruntime": "1.19.2" | null, "ai_edge_litert", "tflite_runtime", "tensorrt"},
 "runtime_errors": {name: why a runtime that is installed did not import} (only those),
 "power_sources": [{"name", "available", "reason"}] (in the order energy "auto" tries them),
 "governor", "clocks_mhz", "gpu_clocks_hz", "temperatures_c"}

`--sysfs-root DIR` (TEST ONLY) reads sysfs under DIR instead of "/".
"""
import importlib
import importlib.util
import json
import os
import platform
import socket
import sys

import ec_energy
import ec_state

PROTOCOL_VERSION = 1
# module name -> distribution names to ask for a version when the module has no __version__
RUNTIMES = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "ai_edge_litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
    "tflite_runtime": ("tflite-runtime",),
    "tensorrt": ("tensorrt",),
}


def _distribution_version(names):
    try:
        from importlib import metadata
    except ImportError:
        return None
    for name in names:
        try:
            return metadata.version(name)
        except Exception:
            continue
    return None


def runtime_version(module, distributions):
    """(version or None, error or None) of one runtime."""
    try:
        if importlib.util.find_spec(module) is None:
            return None, None
    except (ImportError, ValueError) as e:
        return None, "%s: %s" % (type(e).__name__, e)
    try:
        imported = importlib.import_module(module)
    except Exception as e:  # installed but broken (a missing shared library, a wrong Python)
        return None, "%s: %s" % (type(e).__name__, e)
    version = getattr(imported, "__version__", None) or _distribution_version(distributions)
    return str(version) if version else "unknown", None


def probe(root="/"):
    runtimes, errors = {}, {}
    for module, distributions in sorted(RUNTIMES.items()):
        runtimes[module], error = runtime_version(module, distributions)
        if error:
            errors[module] = error
    result = {
        "protocol_version": PROTOCOL_VERSION, "arch": platform.machine(), "python": platform.python_version(),
        "python_executable": sys.executable, "platform": platform.platform(), "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(), "runtimes": runtimes,
        "power_sources": ec_energy.survey(root=root),
        "governor": ec_state.governor(root), "clocks_mhz": ec_state.clocks_mhz(root),
        "gpu_clocks_hz": ec_state.gpu_devfreq(root), "temperatures_c": ec_state.temperatures_c(root),
    }
    if errors:
        result["runtime_errors"] = errors
    return result


def main(argv):
    # Runtimes may print while importing: their output goes to stderr, the result line alone to stdout.
    sys.stdout.flush()
    result_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    root = argv[argv.index("--sysfs-root") + 1] if "--sysfs-root" in argv[:-1] else "/"
    result_stream.write(json.dumps(probe(root), allow_nan=False) + "\n")
    result_stream.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
