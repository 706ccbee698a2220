"""The Android bundle's Kotlin example, ModelRunner.kt: the LiteRT runner with this model's input and
every output filled in from the manifest (shape, type, each output's own scale and zero point), and
the task's code (templates/ModelRunner_<task>.kt): a classifier's top classes, a segmenter's mask,
class areas and Bitmap, a detector's top raw anchors, an embedding and cosine(), a regressor's
outputs. Each task's describe() prints what the bundle's example.py prints."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

TASKS = ("classification", "segmentation", "detection", "embedding", "regression")
TITLES = {"classification": "a classifier's top classes", "segmentation": "a segmenter's mask and class areas",
          "detection": "a detector's top-scoring raw anchors", "embedding": "an embedding vector and cosine()",
          "regression": "a regressor's outputs"}
# a colour per class for the segmenter's mask Bitmap (ARGB, half opaque); class 0 stays transparent
PALETTE = (0x80E6194B, 0x803CB44B, 0x80FFE119, 0x804363D8, 0x80F58231, 0x80911EB4, 0x8046F0F0, 0x80F032E6)


@dataclass(frozen=True)
class Tensor:
    """A manifest tensor as the Kotlin runner declares it; scale 0 stands for a float tensor."""
    name: str
    shape: Tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int
    layout: Optional[str]

    @classmethod
    def of(cls, spec: dict) -> "Tensor":
        q = spec.get("quantization") or {"scale": 0.0, "zero_point": 0}
        # a dimension the file leaves open (-1, None) is one sample
        shape = tuple(int(d) if isinstance(d, int) and d > 0 else 1 for d in spec["shape"])
        return cls(spec["name"], shape, str(spec.get("dtype") or "float32"), float(q["scale"]), int(q["zero_point"]),
                   spec.get("layout"))

    def literal(self) -> str:
        layout = "null" if self.layout is None else string_literal(self.layout)
        return (f"TensorSpec({string_literal(self.name)}, intArrayOf({', '.join(map(str, self.shape))}), "
                f"{string_literal(self.dtype)}, {float_literal(self.scale)}, {self.zero_point}, {layout})")


def string_literal(text: str) -> str:
    """A Kotlin string literal: backslashes, quotes and `$` (a template in Kotlin) escaped."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n")
    return f'"{escaped}"'


def float_literal(value: float) -> str:
    return f"{float(value)!r}f"  # repr keeps every digit of the file's scale; Kotlin rounds it to a Float


def task_of(manifest: dict) -> str:
    """The manifest's task; a manifest without one (written before tasks) is a classifier's."""
    task = manifest.get("task") or "classification"
    return task if task in TASKS else "regression"  # an unknown task: its outputs as numbers


def detection_heads(outputs: Sequence[Tensor]) -> Optional[Tuple[int, int]]:
    """(box output, score output): an N x A x 4 output and an N x A x K one beside it, as example.py
    finds them; None when the detector's outputs are laid out otherwise."""
    shapes = [o.shape for o in outputs]
    for b, box in enumerate(shapes):
        if len(box) == 3 and box[2] == 4:
            for s, score in enumerate(shapes):
                if s != b and len(score) == 3 and score[1] == box[1]:
                    return b, s
    return None


def _fragment(name: str) -> str:
    from ..bundle import EXAMPLES

    return (EXAMPLES / f"ModelRunner_{name}.kt").read_text()


def _task_parts(task: str, manifest: dict, outputs: Sequence[Tensor]) -> Tuple[str, str, str]:
    """(code, companion constants, imports) of the task's fragment."""
    if task == "segmentation":
        palette = ", ".join(f"0x{c:08X}.toInt()" for c in PALETTE)
        return (_fragment("segmentation"), f"        val PALETTE = intArrayOf({palette})\n",
                "import android.graphics.Bitmap\n")
    if task == "detection":
        heads = detection_heads(outputs)
        if heads is not None:
            decode = manifest.get("postprocess")
            note = ("    // The bundle's postprocess.py ({file}:{function}, your decode function) is Python: port it to turn\n"
                    "    // these outputs into boxes, as example.py does with it.\n".format(**decode)) if decode else ""
            constants = (f"        const val BOX_OUTPUT = {heads[0]}  // {outputs[heads[0]].name}: N x A x 4\n"
                         f"        const val SCORE_OUTPUT = {heads[1]}  // {outputs[heads[1]].name}: N x A x K\n")
            return _fragment("detection").replace("@DECODE_NOTE@\n", note), constants, ""
        raw = (" No N x A x 4 box output beside an N x A x K score output: decoding\n"
               "    // these outputs into boxes is the app's (the bundle's postprocess.py, where given, is Python).")
        return _fragment("regression").replace("@FRAGMENT_TASK@", "detection").replace("@RAW_NOTE@", raw), "", ""
    if task == "regression":
        return _fragment("regression").replace("@FRAGMENT_TASK@", "regression").replace("@RAW_NOTE@", ""), "", ""
    return _fragment(task), "", ""


def runner_text(manifest: dict) -> str:
    """ModelRunner.kt for this manifest: input 0, every output and the task's code."""
    from ..bundle import EXAMPLES

    task = task_of(manifest)
    inp = Tensor.of(manifest["inputs"][0])
    outputs = [Tensor.of(o) for o in manifest["outputs"]]
    code, constants, imports = _task_parts(task, manifest, outputs)
    specs = ",\n".join(f"            {o.literal()}" for o in outputs)
    text = (EXAMPLES / "ModelRunner.kt").read_text()
    for key, value in (("@TASK_CODE@", code), ("@TASK_CONSTANTS@", constants), ("@TASK_IMPORTS@", imports),
                       ("@OUTPUT_SPECS@", specs), ("@INPUT_SPEC@", inp.literal()), ("@TASK_TITLE@", TITLES[task]),
                       ("@TASK@", task), ("@INPUT_SCALE@", repr(inp.scale)), ("@INPUT_ZERO_POINT@", str(inp.zero_point))):
        text = text.replace(key, value)
    return text


def bundle_texts(manifest: dict) -> Dict[str, str]:
    return {"ModelRunner.kt": runner_text(manifest)}
