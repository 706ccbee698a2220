"""The Android bundle's Kotlin example, ModelRunner.kt: the LiteRT runner with this model's input and
every output filled in from the manifest (shape, type, each output's own scale and zero point), a
Bitmap to input conversion where the bundle records how its images were preprocessed, and
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
USAGE = {"classification": "val top = runner.classify(input)  // (label, probability), most likely first",
         "segmentation": "val mask = runner.segment(input); val overlay = runner.maskBitmap(mask)",
         "detection": "val anchors = runner.topAnchors(input)  // raw boxes and scores: decoding and NMS are the app's",
         "embedding": "val similarity = runner.similarity(input, otherInput)  // cosine of the two embeddings",
         "regression": "val values = runner.predict(input)  // every output by the model's own name"}
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
    model_name: str  # the model's own name (output_0, a dict key) where the file renamed the tensor

    @classmethod
    def of(cls, spec: dict) -> "Tensor":
        q = spec.get("quantization") or {"scale": 0.0, "zero_point": 0}
        # a dimension the file leaves open (-1, None) is one sample
        shape = tuple(int(d) if isinstance(d, int) and d > 0 else 1 for d in spec["shape"])
        return cls(spec["name"], shape, str(spec.get("dtype") or "float32"), float(q["scale"]), int(q["zero_point"]),
                   spec.get("layout"), spec.get("model_name") or spec["name"])

    def literal(self) -> str:
        layout = "null" if self.layout is None else string_literal(self.layout)
        return (f"TensorSpec({string_literal(self.name)}, intArrayOf({', '.join(map(str, self.shape))}), "
                f"{string_literal(self.dtype)}, {float_literal(self.scale)}, {self.zero_point}, {layout}, "
                f"{string_literal(self.model_name)})")


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
            beside = [s for s, score in enumerate(shapes) if s != b and len(score) == 3 and score[1] == box[1]]
            if beside:  # class scores (K > 1) before a one-value objectness output
                return b, next((s for s in beside if shapes[s][2] > 1), beside[0])
    return None


def _floats(values) -> str:
    return ", ".join(float_literal(v) for v in values)


def _fragment(name: str) -> str:
    from ..bundle import EXAMPLES

    return (EXAMPLES / f"ModelRunner_{name}.kt").read_text()


def _task_parts(task: str, manifest: dict, outputs: Sequence[Tensor]) -> Tuple[str, str, str]:
    """(code, companion constants, imports) of the task's fragment."""
    if task == "segmentation":
        palette = ", ".join(f"0x{c:08X}.toInt()" for c in PALETTE)
        return (_fragment("segmentation"), f"        // maskBitmap's colour per class (ARGB, half opaque)\n"
                                           f"        val PALETTE = intArrayOf({palette})\n",
                "import android.graphics.Bitmap\n")
    if task == "detection":
        heads = detection_heads(outputs)
        if heads is not None:
            decode = manifest.get("postprocess")
            note = ("    // The bundle's postprocess.py ({file}:{function}, your decode function) is Python: port it to turn\n"
                    "    // these outputs into boxes, as example.py does with it.\n".format(**decode)) if decode else ""
            constants = (f"        const val BOX_OUTPUT = {heads[0]}  // {outputs[heads[0]].name}: N x A x 4\n"
                         f"        const val SCORE_OUTPUT = {heads[1]}  // {outputs[heads[1]].name}: N x A x K\n"
                         f"        // false where the model ends in its own sigmoid: its scores are probabilities already\n"
                         f"        const val SCORES_ARE_LOGITS = {'true' if _scores_are_logits(manifest) else 'false'}\n"
                         + _objectness_constants(manifest, outputs, heads))
            return _fragment("detection").replace("@DECODE_NOTE@\n", note), constants, ""
        raw = (" No N x A x 4 box output beside an N x A x K score output: decoding\n"
               "    // these outputs into boxes is the app's (the bundle's postprocess.py, where given, is Python).")
        return _fragment("regression").replace("@FRAGMENT_TASK@", "detection").replace("@RAW_NOTE@", raw), "", ""
    if task == "regression":
        return _fragment("regression").replace("@FRAGMENT_TASK@", "regression").replace("@RAW_NOTE@", ""), "", ""
    return _fragment(task), "", ""


def image_channels(inp: Tensor) -> Optional[int]:
    """The input's channels where it is an image (4-D, 1 or 3 channels in its layout), else None."""
    if len(inp.shape) != 4:
        return None
    channels = inp.shape[3] if inp.layout == "NHWC" else inp.shape[1]
    return channels if channels in (1, 3) else None


def _input_parts(spec: dict, inp: Tensor) -> Tuple[str, str, str]:
    """(code, companion constants, imports) of inputFrom(Bitmap), where the bundle records how its
    images became inputs; else a comment saying why there is none."""
    pre, channels = spec.get("preprocessing") or {}, image_channels(inp)
    if not (pre.get("size") and pre.get("mean") is not None and pre.get("std") is not None and channels):
        why = (pre.get("note") or pre.get("layout") or "no image preprocessing is recorded") if channels else \
            f"the input {list(inp.shape)} is not an image of 1 or 3 channels"
        why = " ".join(str(why).split())  # one comment line
        return (f"    // No inputFrom(Bitmap): {why}. Fill run()'s input as the training data's x was made.\n\n",
                "", "")
    height, width = (int(v) for v in pre["size"])
    constants = (f"        // how an image becomes the input (manifest.json: inputs[0].preprocessing), for inputFrom()\n"
                 f"        const val IMAGE_HEIGHT = {height}\n        const val IMAGE_WIDTH = {width}\n"
                 f"        const val PIXEL_SCALE = {float_literal(pre.get('scale') or 1.0)}\n"
                 f"        val MEAN = floatArrayOf({_floats(pre['mean'][:channels])})\n"
                 f"        val STD = floatArrayOf({_floats(pre['std'][:channels])})\n")
    return _fragment("image_input"), constants, "import android.graphics.Bitmap\n"


def _usage(task: str, task_code: str, input_code: str) -> Tuple[str, str]:
    """The header's example lines: where the input comes from and the task's call."""
    source = "runner.inputFrom(bitmap)" if "fun inputFrom(" in input_code else \
        "floatArrayOf(/* one sample in INPUT's layout, preprocessed as the training data's x */)"
    return source, USAGE["regression" if "fun predict(" in task_code else task]


def _fills(manifest: dict) -> Dict[str, str]:
    """Each @PLACEHOLDER@ of ModelRunner.kt and its text for this manifest."""
    task = task_of(manifest)
    inp = Tensor.of(manifest["inputs"][0])
    outputs = [Tensor.of(o) for o in manifest["outputs"]]
    code, constants, imports = _task_parts(task, manifest, outputs)
    in_code, in_constants, in_imports = _input_parts(manifest["inputs"][0], inp)
    usage_input, usage_call = _usage(task, code, in_code)
    return {"@USAGE_INPUT@": usage_input, "@USAGE_CALL@": usage_call, "@INPUT_CODE@": in_code,
            "@INPUT_CONSTANTS@": in_constants, "@TASK_CODE@": code, "@TASK_CONSTANTS@": constants,
            "@IMPORTS@": "".join(sorted(set((imports + in_imports).splitlines(keepends=True)))),
            "@OUTPUT_SPECS@": ",\n".join(f"            {o.literal()}" for o in outputs),
            "@INPUT_SPEC@": inp.literal(), "@TASK_TITLE@": TITLES[task], "@TASK@": task,
            "@INPUT_SCALE@": repr(inp.scale), "@INPUT_ZERO_POINT@": str(inp.zero_point)}


def runner_text(manifest: dict) -> str:
    """ModelRunner.kt for this manifest: input 0, every output and the task's code."""
    from ..bundle import EXAMPLES

    text = (EXAMPLES / "ModelRunner.kt").read_text()
    for key, value in _fills(manifest).items():  # in order: @TASK@ last, after the @TASK_...@ names
        text = text.replace(key, value)
    return text


def bundle_texts(manifest: dict) -> Dict[str, str]:
    return {"ModelRunner.kt": runner_text(manifest)}


def _objectness_constants(manifest: dict, outputs: Sequence[Tensor], heads: Tuple[int, int]) -> str:
    """OBJECTNESS_OUTPUTS (N x A x 1 outputs beside the boxes, which the checks multiply into the class
    scores, YOLO-style) and whether each holds logits, in the order verify recorded them."""
    box, score = heads
    found = [i for i, o in enumerate(outputs) if i not in (box, score) and len(o.shape) == 3
             and o.shape[1] == outputs[box].shape[1] and o.shape[2] == 1]
    parity = (manifest.get("metrics") or {}).get("parity") or [{}]
    kinds = [bool(o.get("are_logits", True)) for o in (parity[-1].get("task_details") or {}).get("objectness", [])]
    kinds += [True] * (len(found) - len(kinds))
    return (f"        // one-value objectness outputs: an anchor's score is its class probability times each of them\n"
            f"        val OBJECTNESS_OUTPUTS = intArrayOf({', '.join(str(i) for i in found)})\n"
            f"        val OBJECTNESS_ARE_LOGITS = booleanArrayOf({', '.join('true' if k else 'false' for k in kinds[:len(found)])})\n")


def _scores_are_logits(manifest: dict) -> bool:
    """How the build read the detector's scores (verify's task_details): logits unless they never left [0, 1]."""
    parity = (manifest.get("metrics") or {}).get("parity") or [{}]
    return bool((parity[-1].get("task_details") or {}).get("scores_are_logits", True))
