"""Read and check a benchmark job (protocol_version 1). Standard library only, Python >= 3.8.

The schema is closed: an unknown key is an error naming the key, because a typo silently ignored
would measure something other than what was asked. ec_bench.py documents every key.
"""
import json
import os

PROTOCOL_VERSION = 1
JOB_KEYS = ("protocol_version", "model", "runtime", "runtime_options", "inputs", "warmup", "runs",
            "max_runs", "energy", "idle_seconds", "seed", "report_outputs",
            "energy_interval_ms", "energy_device_index", "lock_clocks", "sysfs_root")  # sysfs_root: tests only
DEFAULT_WARMUP = {"runs": 10, "seconds": 1.0}
DEFAULT_RUNS = {"count": 100, "seconds": 1.0}
DEFAULT_MAX_RUNS = 100000


class JobError(ValueError):
    """The job itself is wrong; the message names the key."""


def obj(value, where):
    if not isinstance(value, dict):
        raise JobError("%s must be an object, got %r" % (where, value))
    return value


def check_keys(section, known, where):
    unknown = sorted(set(obj(section, where)) - set(known))
    if unknown:
        raise JobError("unknown key(s) in %s: %s; valid: %s" % (where, ", ".join(unknown), ", ".join(known)))


def number(section, key, default, where, integer=False, minimum=0):
    value = section.get(key, default)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value < minimum:
        kind = "an integer" if integer else "a number"
        raise JobError("%s.%s must be %s >= %s, got %r" % (where, key, kind, minimum, value))
    return value


def text(section, key, where, default=None):
    value = section.get(key, default)
    if not isinstance(value, str) or not value:
        raise JobError("%s.%s must be a non-empty string, got %r" % (where, key, value))
    return value


def budget(section, where, count_key, min_count):
    """(count, seconds) of a `warmup` or `runs` block; a key left out asks for nothing more."""
    check_keys(section, (count_key, "seconds"), where)
    count = number(section, count_key, min_count, where, integer=True, minimum=min_count)
    return count, float(number(section, "seconds", 0.0, where))


def random_entry(entry):
    check_keys(entry, ("name", "shape", "dtype"), "inputs.random[]")
    name = text(entry, "name", "inputs.random[]")
    shape = entry.get("shape")
    if shape is not None and not (isinstance(shape, list) and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise JobError("inputs.random[%s].shape must be a list of integers >= 0, got %r" % (name, shape))
    dtype = entry.get("dtype")
    if dtype is not None and not isinstance(dtype, str):
        raise JobError("inputs.random[%s].dtype must be a numpy dtype name, got %r" % (name, dtype))
    return name, {"shape": shape, "dtype": dtype}


def inputs_spec(inputs):
    """{"random": {name: {shape, dtype}}, "npy": {name: path}} with every name given once."""
    check_keys(inputs, ("random", "npy"), "inputs")
    entries = inputs.get("random", [])
    if not isinstance(entries, list):
        raise JobError("inputs.random must be a list, got %r" % (entries,))
    random = {}
    for entry in entries:
        name, spec = random_entry(entry)
        if name in random:
            raise JobError("inputs.random gives input '%s' twice" % name)
        random[name] = spec
    npy = obj(inputs.get("npy", {}), "inputs.npy")
    for name in npy:
        text(npy, name, "inputs.npy")
    both = sorted(set(random) & set(npy))
    if both:
        raise JobError("input(s) %s given both in inputs.random and inputs.npy" % ", ".join(both))
    return {"random": random, "npy": dict(npy)}


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise JobError("cannot read job file %s: %s" % (path, e))


def read_job(path, runtimes, energy_sources):
    """The checked job with defaults filled in and `model` made absolute."""
    job = load_json(path)
    check_keys(job, JOB_KEYS, "job")
    if job.get("protocol_version") != PROTOCOL_VERSION:
        raise JobError("job.protocol_version must be %d, got %r" % (PROTOCOL_VERSION, job.get("protocol_version")))
    folder = os.path.dirname(os.path.abspath(path))
    model = os.path.join(folder, text(job, "model", "job"))  # an absolute `model` stays as it is
    if not os.path.isfile(model):
        raise JobError("model file not found: %s" % model)
    runtime = text(job, "runtime", "job")
    if runtime not in runtimes:
        raise JobError("job.runtime '%s' is not known here; known: %s" % (runtime, ", ".join(sorted(runtimes))))
    energy = text(job, "energy", "job", default="auto")
    if energy not in energy_sources:
        raise JobError("job.energy '%s' is not known; valid: %s" % (energy, ", ".join(energy_sources)))
    options = obj(job.get("runtime_options", {}), "runtime_options")
    report, lock = job.get("report_outputs", False), job.get("lock_clocks", False)
    if not isinstance(report, bool):
        raise JobError("job.report_outputs must be true or false, got %r" % (report,))
    if not isinstance(lock, bool):
        raise JobError("job.lock_clocks must be true or false, got %r" % (lock,))
    return {
        "folder": folder, "model": model, "runtime": runtime, "runtime_options": options,
        "inputs": inputs_spec(job.get("inputs", {})),
        "warmup": budget(job.get("warmup", DEFAULT_WARMUP), "warmup", "runs", 0),
        "runs": budget(job.get("runs", DEFAULT_RUNS), "runs", "count", 1),
        "max_runs": number(job, "max_runs", DEFAULT_MAX_RUNS, "job", integer=True, minimum=1),
        "energy": energy, "idle_seconds": float(number(job, "idle_seconds", 1.0, "job")),
        "seed": number(job, "seed", 0, "job", integer=True), "report_outputs": report, "lock_clocks": lock,
        "energy_interval_ms": energy_interval_ms(job),
        "energy_device_index": number(job, "energy_device_index", 0, "job", integer=True),
        "sysfs_root": sysfs_root(job, folder),
    }


def energy_interval_ms(job):
    interval = job.get("energy_interval_ms")
    return None if interval is None else float(number(job, "energy_interval_ms", None, "job", minimum=1))


def sysfs_root(job, folder):
    """Where power and clock readers look for /sys and /proc: "/" on a device; a fixture tree in tests."""
    root = job.get("sysfs_root")
    if root is None:
        return "/"
    root = os.path.join(folder, text(job, "sysfs_root", "job"))
    if not os.path.isdir(root):
        raise JobError("job.sysfs_root is not a folder: %s" % root)
    return root
