"""TensorRT engines' identity and cache on the device: which GPU and JetPack this is, the cache key
(GPU name, compute capability, TensorRT version, ONNX hash, build options) and the cache folder.
Standard library only; Python >= 3.8; split from ec_trt.py, which re-exports these names."""
import hashlib
import json
import os
import re
import shutil
import subprocess

L4T_TO_JETPACK = {32: 4, 35: 5, 36: 6}  # devices.md: JetPack 4 = L4T R32, 5 = R35, 6 = R36


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(gpu, compute_capability, tensorrt_version, onnx_sha256, build_options):
    identity = {"gpu": gpu, "compute_capability": compute_capability, "tensorrt_version": tensorrt_version,
                "onnx_sha256": onnx_sha256, "build_options": build_options}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip("\x00").strip()
    except OSError:
        return None


def jetpack(root="/"):
    """{"l4t": "36.4.3", "jetpack_major": 6, "release": first line} from /etc/nv_tegra_release, or None."""
    line = _read(os.path.join(root, "etc", "nv_tegra_release"))
    if not line:
        return None
    line = line.splitlines()[0]
    match = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", line)
    if not match:
        return {"l4t": None, "jetpack_major": None, "release": line}
    l4t_major = int(match.group(1))
    return {"l4t": "%d.%s" % (l4t_major, match.group(2)), "jetpack_major": L4T_TO_JETPACK.get(l4t_major),
            "release": line}


def gpu_identity(cuda=None, root="/"):
    """{"gpu", "compute_capability", "source"} before any build: cudart's device properties, else the
    Jetson device tree (board model; no compute capability), else nvidia-smi, else unknown."""
    if cuda is not None:
        name, capability = cuda.device()
        return {"gpu": name, "compute_capability": capability, "source": "cudart"}
    model = _read(os.path.join(root, "proc", "device-tree", "model"))
    if model:
        soc = _read(os.path.join(root, "proc", "device-tree", "compatible"))
        return {"gpu": model, "compute_capability": None, "soc": (soc or "").replace("\x00", ","),
                "source": "device-tree"}
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"], timeout=30,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True).stdout
            name, capability = [p.strip() for p in out.splitlines()[0].split(",")][:2]
            return {"gpu": name, "compute_capability": capability, "source": "nvidia-smi"}
        except (OSError, IndexError, ValueError, subprocess.SubprocessError):
            pass
    return {"gpu": None, "compute_capability": None, "source": None}


class EngineCache(object):
    """`<key>.engine` + `<key>.json` in one folder; the metadata is written last, so an engine without it
    (a build that died) is not reused."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, mode=0o700, exist_ok=True)

    def path(self, key, suffix=".engine"):
        return os.path.join(self.folder, key + suffix)

    def partial(self, key):
        return self.path(key, ".engine.partial-%d" % os.getpid())

    def lookup(self, key):
        if not os.path.isfile(self.path(key)):
            return None
        try:
            with open(self.path(key, ".json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def store(self, key, partial_path, meta):
        os.replace(partial_path, self.path(key))
        tmp = self.path(key, ".json.partial-%d" % os.getpid())
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path(key, ".json"))
