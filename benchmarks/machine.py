"""Which CPU a benchmark ran on, in words, so that results from different machines are not mixed up."""
import os
import platform
from pathlib import Path

# INT8 dot-product instructions: without them x86 multiplies u8 x s8 with VPMADDUBSW, which is
# what bounds INT8's speed-up on a CPU (see int8_variants.json)
DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def describe_cpu() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    return {"arch": platform.machine(), "model": model, "cores": os.cpu_count(),
            "int8_dot_product": sorted(f for f in DOT_FLAGS if f in flags)}


def measured_on(runtime: str, threads: int) -> str:
    cpu = describe_cpu()
    dot = ", ".join(cpu["int8_dot_product"]) or "no INT8 dot-product instructions"
    return f"{platform.node() or 'this host'} ({cpu['arch']}, {cpu['model']}, {cpu['cores']} cores, {dot}), " \
           f"{runtime}, {threads} threads"
