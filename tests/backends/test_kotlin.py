"""The Android bundle's ModelRunner.kt for every task: each output's buffer with its own shape, type,
scale and zero point, and the task's code. The manifests below are the ones litert-torch's files gave
for tests/models/task_models.py (and a classifier) on --target android, names and scales included.

Where kotlinc and java are installed, the generated runners are compiled against stand-ins of the
Android and LiteRT classes (the stand-in Interpreter hands out output bytes made here, in an order
other than the manifest's, so that a buffer read from the wrong output shows), run, and their
describe() compared with what the bundle's example.py prints for the same bytes."""
from __future__ import annotations

import copy
import importlib.util
import io
import re
import shutil
import subprocess
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from edgecompress.backends import kotlin

TEMPLATES = Path(kotlin.__file__).parents[1] / "templates"
INPUT = {"name": "serving_default_args_0", "shape": [1, 32, 32, 3], "dtype": "int8", "layout": "NHWC",
         "quantization": {"scale": 0.03348627686500549, "zero_point": 9}}


def _out(i, shape, scale=None, zero_point=0, layout=None):
    return {"name": f"serving_default_output_{i}_output", "shape": shape, "dtype": "int8" if scale else "float32",
            "layout": layout, "quantization": {"scale": scale, "zero_point": zero_point} if scale else None,
            "model_name": f"output_{i}"}


MANIFESTS = {
    "detection": [_out(0, [1, 64, 4], 0.00390625, -128), _out(1, [1, 64, 2], 0.0033386789727956057, -13)],
    "segmentation": [_out(0, [1, 32, 32, 3], 0.0035880038049072027, -31, "NHWC")],
    "embedding": [_out(0, [1, 32])],  # the L2 normalisation's output stays float in the INT8 file
    "regression": [_out(0, [1, 2], 0.0007196743390522897, 127), _out(1, [1, 1], 0.0012411073548719287, -128)],
    "classification": [_out(0, [1, 10], 0.00039799377555027604, -14)],
}
TASK_CODE = {"detection": ("fun topAnchors(", "const val BOX_OUTPUT = 0", "const val SCORE_OUTPUT = 1", "sigmoid("),
             "segmentation": ("fun segment(", "fun classAreas(", "fun maskBitmap(", "import android.graphics.Bitmap"),
             "embedding": ("fun embed(", "fun cosine(", "fun similarity(", "fun norm("),
             "regression": ("fun predict(",),
             "classification": ("fun classify(", "labels.getOrElse")}


NPZ_NOTE = {"layout": "as given (npz)", "size": None, "scale": None, "mean": None, "std": None,
            "note": "inputs as in x.npz: preprocess new inputs exactly as that file's x was made"}
IMAGENET = {"size": [32, 32], "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def manifest(task):
    return {"task": task, "inputs": [dict(INPUT, preprocessing=NPZ_NOTE)], "outputs": copy.deepcopy(MANIFESTS[task])}


def objectness_manifest():
    """A YOLO-style detector: boxes, class logits (K = 2) and a one-value objectness logit per anchor."""
    m = manifest("detection")
    m["outputs"].append(_out(2, [1, 64, 1], 0.05, 3))
    m["metrics"] = {"parity": [{"task_details": {"scores_are_logits": True,
                                                 "objectness": [{"output": 2, "are_logits": True}]}}]}
    return m


def image_manifest(channels):
    """A classifier trained on an image folder: RGB channels last, or one luminance channel first."""
    m = manifest("classification")
    m["inputs"][0].update(shape=[1, 32, 32, 3] if channels == 3 else [1, 1, 32, 32],
                          layout="NHWC" if channels == 3 else "NCHW", preprocessing=dict(IMAGENET, layout="NCHW"))
    return m


def output_specs(text):
    block = text.split("val OUTPUTS = listOf(")[1].split("\n        )\n")[0]
    return re.findall(r'TensorSpec\("([^"]+)", intArrayOf\(([\d, ]+)\), "(\w+)", ([\d.e-]+)f, (-?\d+), (null|"\w+"), '
                      r'"([^"]+)"\)', block)


@pytest.mark.parametrize("task", sorted(MANIFESTS))
def test_each_output_has_its_buffer_shape_type_and_quantization_and_the_task_its_code(task):
    m = manifest(task)
    text = kotlin.bundle_texts(m)["ModelRunner.kt"]
    specs = output_specs(text)
    assert len(specs) == len(m["outputs"]) == text.count("TensorSpec(\"serving_default_output_")
    for (name, shape, dtype, scale, zero_point, layout, model_name), told in zip(specs, m["outputs"]):
        q = told["quantization"] or {"scale": 0.0, "zero_point": 0}
        assert (name, [int(d) for d in shape.split(", ")], dtype) == (told["name"], told["shape"], told["dtype"])
        assert (float(scale), int(zero_point)) == (q["scale"], q["zero_point"])  # every digit of the file's scale
        assert layout == ("null" if told["layout"] is None else f'"{told["layout"]}"')
        assert model_name == told["model_name"]  # the name the model gave it, which predict() keys by
    assert f'const val TASK = "{task}"' in text
    assert "inputScale = 0.03348627686500549f" in text and "inputZeroPoint = 9" in text
    for code in TASK_CODE[task]:
        assert code in text, code
    other = {c for t, codes in TASK_CODE.items() if t != task for c in codes if c.startswith("fun ")} - set(TASK_CODE[task])
    assert not [c for c in other if c in text], "only this task's code"
    assert "@" not in text and text.count("{") == text.count("}") and text.count("(") == text.count(")")


def test_a_detector_whose_heads_are_not_boxes_beside_scores_leaves_decoding_to_the_app():
    m = manifest("detection")
    m["outputs"][0]["shape"] = [1, 5, 64]  # YOLO-style (N, 4 + K, A): no N x A x 4 output
    m["postprocess"] = {"file": "postprocess.py", "function": "decode"}
    text = kotlin.runner_text(m)
    assert "fun topAnchors(" not in text and "fun predict(" in text
    assert "decoding\n    // these outputs into boxes is the app's" in text
    m = manifest("detection")
    m["postprocess"] = {"file": "postprocess.py", "function": "decode"}
    assert "postprocess.py (postprocess.py:decode, your decode function) is Python" in kotlin.runner_text(m)


def test_an_image_input_gets_inputfrom_bitmap_with_the_recorded_preprocessing_and_arrays_a_note():
    text = kotlin.runner_text(image_manifest(3))
    assert "fun inputFrom(bitmap: Bitmap): FloatArray" in text and "import android.graphics.Bitmap" in text
    assert "IMAGE_HEIGHT = 32" in text and "PIXEL_SCALE = 0.00392156862745098f" in text
    assert "MEAN = floatArrayOf(0.485f, 0.456f, 0.406f)" in text and "STD = floatArrayOf(0.229f, 0.224f, 0.225f)" in text
    assert "MEAN = floatArrayOf(0.485f)\n" in kotlin.runner_text(image_manifest(1))  # one channel: its own
    text = kotlin.runner_text(manifest("segmentation"))
    assert "fun inputFrom(" not in text and text.count("import android.graphics.Bitmap") == 1
    assert "// No inputFrom(Bitmap): inputs as in x.npz: preprocess new inputs exactly as" in text


def test_a_name_is_a_kotlin_string_and_a_manifest_without_a_task_is_a_classifier():
    m = manifest("classification")
    del m["task"]
    m["outputs"][0]["name"] = 'logits"$x'
    text = kotlin.runner_text(m)
    assert 'TensorSpec("logits\\"\\$x", intArrayOf(1, 10)' in text and 'TASK = "classification"' in text
    del m["outputs"][0]["model_name"]  # an ONNX's tensors keep the model's names
    assert '-14, null, "logits\\"\\$x")' in kotlin.runner_text(m)


# ---- compiled and run against stand-ins, where kotlinc and java are installed ------------------------

STUBS = {
    "org/tensorflow/lite/Interpreter.java": """
package org.tensorflow.lite;
import java.nio.ByteBuffer;
import java.util.Map;
/** The LiteRT Interpreter's calls ModelRunner makes; outputs come from `outputs`, in the file's order `names`. */
public class Interpreter implements AutoCloseable {
    public static String[] names = new String[0];
    public static byte[][] outputs = new byte[0][];
    public static int inputBytes;
    public static byte[] lastInput;
    public static class Options { public Options setNumThreads(int threads) { return this; } }
    public Interpreter(ByteBuffer model, Options options) { if (model.capacity() == 0) throw new IllegalStateException(); }
    public Tensor getInputTensor(int index) { return new Tensor(inputBytes); }
    public Tensor getOutputTensor(int index) { return new Tensor(outputs[index].length); }
    public int getOutputIndex(String name) {
        for (int i = 0; i < names.length; i++) if (names[i].equals(name)) return i;
        throw new IllegalArgumentException("no output " + name);
    }
    public void runForMultipleInputsOutputs(Object[] inputs, Map<Integer, Object> out) {
        ByteBuffer in = (ByteBuffer) inputs[0];
        lastInput = new byte[in.remaining()];
        in.get(lastInput);
        for (Map.Entry<Integer, Object> e : out.entrySet()) ((ByteBuffer) e.getValue()).put(outputs[e.getKey()]);
    }
    public void close() {}
}
""",
    "org/tensorflow/lite/Tensor.java": """
package org.tensorflow.lite;
public class Tensor {
    private final int bytes;
    Tensor(int bytes) { this.bytes = bytes; }
    public int numBytes() { return bytes; }
}
""",
    "android/content/Context.java": """
package android.content;
public class Context { public android.content.res.AssetManager getAssets() { return new android.content.res.AssetManager(); } }
""",
    "android/content/res/AssetManager.java": """
package android.content.res;
import java.io.*;
public class AssetManager {
    public static File folder;
    public InputStream open(String name) throws IOException { return new FileInputStream(new File(folder, name)); }
    public AssetFileDescriptor openFd(String name) throws IOException { return new AssetFileDescriptor(new File(folder, name)); }
}
""",
    "android/content/res/AssetFileDescriptor.java": """
package android.content.res;
import java.io.*;
public class AssetFileDescriptor {
    private final File file;
    private final FileInputStream stream;
    AssetFileDescriptor(File file) throws IOException { this.file = file; this.stream = new FileInputStream(file); }
    public FileDescriptor getFileDescriptor() throws IOException { return stream.getFD(); }
    public long getStartOffset() { return 0; }
    public long getDeclaredLength() { return file.length(); }
}
""",
    "android/graphics/Bitmap.java": """
package android.graphics;
public class Bitmap {
    public enum Config { ARGB_8888 }
    public final int[] colors;
    private final int width, height;
    private Bitmap(int[] colors, int width, int height) { this.colors = colors; this.width = width; this.height = height; }
    public static Bitmap createBitmap(int[] colors, int width, int height, Config config) {
        if (colors.length != width * height) throw new IllegalArgumentException("colors");
        return new Bitmap(colors, width, height);
    }
    public static Bitmap createScaledBitmap(Bitmap src, int width, int height, boolean filter) {
        throw new UnsupportedOperationException("the tests pass images at the model's size");
    }
    public void getPixels(int[] pixels, int offset, int stride, int x, int y, int width, int height) {
        for (int r = 0; r < height; r++)
            for (int c = 0; c < width; c++) pixels[offset + r * stride + c] = colors[(y + r) * this.width + x + c];
    }
    public int getWidth() { return width; }
    public int getHeight() { return height; }
}
""",
}

MAIN = """
import android.content.Context
import android.content.res.AssetManager
import org.tensorflow.lite.Interpreter
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

fun main(args: Array<String>) {
    val dir = File(args[1])
    AssetManager.folder = dir
    Interpreter.names = File(dir, "names.txt").readLines().toTypedArray()
    Interpreter.outputs = Array(Interpreter.names.size) { File(dir, "out_$it.bin").readBytes() }
    Interpreter.inputBytes = File(dir, "input_bytes.txt").readText().trim().toInt()
    val raw = ByteBuffer.wrap(File(dir, "input.bin").readBytes()).order(ByteOrder.LITTLE_ENDIAN)
    val input = FloatArray(raw.remaining() / 4) { raw.getFloat() }
    val context = Context()
    val lines = when (args[0]) {
        "classification" -> com.example.edgecompress.classification.ModelRunner(context).describe(input)
        "segmentation" -> {
            val runner = com.example.edgecompress.segmentation.ModelRunner(context)
            val bitmap = runner.maskBitmap(runner.segment(input))
            runner.describe(input) + listOf("bitmap ${bitmap.width}x${bitmap.height}")
        }
        "detection" -> com.example.edgecompress.detection.ModelRunner(context).describe(input)
        "objectness" -> com.example.edgecompress.objectness.ModelRunner(context).describe(input)
        "embedding" -> {
            val runner = com.example.edgecompress.embedding.ModelRunner(context)
            val (a, b) = Pair(floatArrayOf(1f, 2f, 2f), floatArrayOf(-2f, -4f, -4f))
            val cosines = listOf(runner.cosine(a, a), runner.cosine(a, b), runner.cosine(a, floatArrayOf(2f, -1f, 0f)))
            runner.describe(input, input) + listOf("cosine " + cosines.joinToString(" ") { "%.4f".format(it) },
                                                   "norm %.4f".format(runner.norm(a)))
        }
        "image", "gray" -> {
            val argb = ByteBuffer.wrap(File(dir, "image.bin").readBytes()).order(ByteOrder.LITTLE_ENDIAN)
            val side = File(dir, "image_side.txt").readText().trim().toInt()
            val bitmap = android.graphics.Bitmap.createBitmap(IntArray(side * side) { argb.getInt() }, side, side,
                                                              android.graphics.Bitmap.Config.ARGB_8888)
            val values = if (args[0] == "image") com.example.edgecompress.image.ModelRunner(context).inputFrom(bitmap)
                         else com.example.edgecompress.gray.ModelRunner(context).inputFrom(bitmap)
            values.map { it.toString() }
        }
        else -> {
            val runner = com.example.edgecompress.regression.ModelRunner(context)
            runner.describe(input) + listOf("predict " + runner.predict(input).keys.joinToString(" "))
        }
    }
    Interpreter.lastInput?.let { File(dir, "input_sent.bin").writeBytes(it) }  // none where the model did not run
    for (line in lines) println(line)
}
"""


def _tools():
    found = tuple(shutil.which(tool) for tool in ("kotlinc", "java", "javac"))
    return found if all(found) else None


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Every task's runner, each in its own package, compiled with the stand-ins and a main."""
    tools = _tools()
    if tools is None:
        pytest.skip("kotlinc, java and javac are not installed here (apt-get install kotlin): ModelRunner.kt is "
                    "checked as text only")
    kotlinc, java, javac = tools
    root = tmp_path_factory.mktemp("kotlin")
    stubs, classes = root / "stubs", root / "classes"
    for rel, source in STUBS.items():
        (stubs / rel).parent.mkdir(parents=True, exist_ok=True)
        (stubs / rel).write_text(source)
    subprocess.run([javac, "-d", str(classes), *map(str, stubs.rglob("*.java"))], check=True, capture_output=True)
    sources = []
    runners = {**{task: manifest(task) for task in MANIFESTS}, "image": image_manifest(3), "gray": image_manifest(1),
               "objectness": objectness_manifest()}
    for name, m in runners.items():
        text = kotlin.runner_text(m).replace("package com.example.edgecompress", f"package com.example.edgecompress.{name}")
        sources.append(root / f"{name}.kt")
        sources[-1].write_text(text)
    (root / "Main.kt").write_text(MAIN)
    done = subprocess.run([kotlinc, "-cp", str(classes), "-include-runtime", "-d", str(root / "runners.jar"),
                           *map(str, sources), str(root / "Main.kt")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "warning:" not in done.stderr.replace("OpenJDK 64-Bit Server VM warning", ""), done.stderr
    return java, f"{root / 'runners.jar'}:{classes}"


def _example_module():
    spec = importlib.util.spec_from_file_location("tflite_example", TEMPLATES / "tflite_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _raw_outputs(m, rng):
    """Bytes for each output as the file holds them, and the same outputs dequantized (example.py's way).
    Scores are distinct (a permutation), so no two anchors or classes tie for first place."""
    raw, values = [], []
    for spec in m["outputs"]:
        n, q = int(np.prod(spec["shape"])), spec["quantization"]
        if q:
            ints = (rng.permutation(256)[:n] if n <= 256 else rng.integers(0, 256, n)) - 128
            data = ints.astype(np.int8).reshape(spec["shape"])
            values.append((data.astype(np.float32) - q["zero_point"]) * q["scale"])
        else:
            data = rng.normal(0, 1, spec["shape"]).astype(np.float32)
            values.append(data)
        raw.append(data.tobytes())
    return raw, values


def _reference(task, m, values):
    """What the bundle's example.py prints for these outputs (run in the test's folder: a segmenter's
    example writes mask.png there); the Kotlin runner's mask is maskBitmap(), so that line is left out."""
    if task == "classification":  # example.py's main(): softmax over output 0, top 3
        logits = values[0][0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        return [f"{str(i):>12}  {probs[i]:.3f}" for i in np.argsort(-probs)[:3]]
    printed = io.StringIO()
    with redirect_stdout(printed):
        _example_module().describe(values, m)
    return [line for line in printed.getvalue().splitlines() if not line.startswith("mask: mask.png")]


def _same(kotlin_lines, python_lines):
    """Equal words, and numbers equal to the last printed digit (Java and Python round halves apart)."""
    assert len(kotlin_lines) == len(python_lines), (kotlin_lines, python_lines)
    for k, p in zip(kotlin_lines, python_lines):
        kw, pw = k.replace("%", " %").split(), p.replace("%", " %").split()
        assert len(kw) == len(pw), (k, p)
        for a, b in zip(kw, pw):
            try:
                assert abs(float(a) - float(b)) <= 1.5 * 10 ** -len(b.split(".")[1]) if "." in b else a == b, (k, p)
            except ValueError:
                assert a == b, (k, p)


@pytest.mark.litert
@pytest.mark.parametrize("task", sorted(MANIFESTS))
def test_the_compiled_runner_prints_what_example_py_prints_for_the_same_output_bytes(task, compiled, tmp_path,
                                                                                    monkeypatch):
    java, classpath = compiled
    monkeypatch.chdir(tmp_path)
    m, rng = manifest(task), np.random.default_rng(sorted(MANIFESTS).index(task))
    raw, values = _raw_outputs(m, rng)
    order = list(reversed(range(len(raw))))  # the file's order is not the manifest's
    (tmp_path / "names.txt").write_text("\n".join(m["outputs"][i]["name"] for i in order) + "\n")
    for position, i in enumerate(order):
        (tmp_path / f"out_{position}.bin").write_bytes(raw[i])
    (tmp_path / "model.tflite").write_bytes(b"\0\0\0\0TFL3")
    if task == "segmentation":  # the data's class names, as the bundle's labels.txt and manifest carry them
        m["labels"] = ["background", "rectangle", "disc"]
        (tmp_path / "labels.txt").write_text("\n".join(m["labels"]) + "\n")
    x = rng.normal(0, 1, INPUT["shape"]).astype(np.float32)
    (tmp_path / "input.bin").write_bytes(x.astype("<f4").tobytes())
    (tmp_path / "input_bytes.txt").write_text(str(x.size))
    done = subprocess.run([java, "-cp", classpath, "MainKt", task, str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    if task == "segmentation":
        assert lines.pop() == "bitmap 32x32"
        assert {line.split()[2] for line in lines} == set(m["labels"])  # by name, as example.py prints them
        assert len({line.index("%") for line in lines}) == 1  # lined up
    if task == "regression":
        assert lines.pop() == "predict output_0 output_1"
    if task == "embedding":  # the stand-in answers every input alike: two inputs' similarity is 1 here
        assert lines[-3:] == ["cosine similarity of the two inputs: 1.0000", "cosine 1.0000 -1.0000 0.0000", "norm 3.0000"]
        del lines[-3:]
    _same(lines, _reference(task, m, values))
    q = INPUT["quantization"]
    sent = np.frombuffer((tmp_path / "input_sent.bin").read_bytes(), np.int8)
    expected = np.clip(np.round(x.reshape(-1) / q["scale"]) + q["zero_point"], -128, 127)
    assert np.abs(sent.astype(int) - expected).max() <= 1 and (sent == expected).mean() > 0.99  # halves round apart


@pytest.mark.litert
def test_the_compiled_runner_ranks_anchors_by_class_times_objectness_as_example_py_does(compiled, tmp_path,
                                                                                        monkeypatch):
    """A YOLO-style detector's anchor score is sigmoid(class) * sigmoid(objectness), as the build's checks read
    it; ranking by the class scores alone put background anchors first."""
    java, classpath = compiled
    monkeypatch.chdir(tmp_path)
    m, rng = objectness_manifest(), np.random.default_rng(7)
    raw, values = _raw_outputs(m, rng)
    (tmp_path / "names.txt").write_text("\n".join(o["name"] for o in m["outputs"]) + "\n")
    for i, data in enumerate(raw):
        (tmp_path / f"out_{i}.bin").write_bytes(data)
    (tmp_path / "model.tflite").write_bytes(b"\0\0\0\0TFL3")
    x = rng.normal(0, 1, INPUT["shape"]).astype(np.float32)
    (tmp_path / "input.bin").write_bytes(x.astype("<f4").tobytes())
    (tmp_path / "input_bytes.txt").write_text(str(x.size))
    done = subprocess.run([java, "-cp", classpath, "MainKt", "objectness", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines, python = done.stdout.splitlines(), _reference("detection", m, values)
    _same(lines, python)
    sig = lambda v: 1 / (1 + np.exp(-v.astype(np.float64)))  # noqa: E731
    conf = (sig(values[1][0]) * sig(values[2][0])).max(-1)
    assert [int(line.split()[1]) for line in python] == list(np.argsort(-conf)[:5])
    assert float(python[0].split("score ")[1].split()[0]) == pytest.approx(conf.max(), abs=1e-3)


def test_an_objectness_output_is_named_in_the_runners_constants():
    text = kotlin.runner_text(objectness_manifest())
    assert "val OBJECTNESS_OUTPUTS = intArrayOf(2)" in text and "val OBJECTNESS_ARE_LOGITS = booleanArrayOf(true)" in text
    assert "val OBJECTNESS_OUTPUTS = intArrayOf()" in kotlin.runner_text(manifest("detection"))


@pytest.mark.litert
@pytest.mark.parametrize("channels", [3, 1])
def test_the_compiled_inputfrom_preprocesses_a_bitmap_as_example_py_preprocesses_the_image(channels, compiled,
                                                                                          tmp_path):
    from PIL import Image

    java, classpath = compiled
    m = image_manifest(channels)
    rgb = np.random.default_rng(channels).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    argb = (0xFF << 24) | (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    (tmp_path / "image.bin").write_bytes(argb.astype("<u4").tobytes())
    (tmp_path / "image_side.txt").write_text("32")
    (tmp_path / "names.txt").write_text(m["outputs"][0]["name"] + "\n")
    (tmp_path / "out_0.bin").write_bytes(bytes(10))
    (tmp_path / "model.tflite").write_bytes(b"\0\0\0\0TFL3")
    (tmp_path / "input.bin").write_bytes(b"")
    (tmp_path / "input_bytes.txt").write_text("0")
    done = subprocess.run([java, "-cp", classpath, "MainKt", "image" if channels == 3 else "gray", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    from_bitmap = np.array([float(v) for v in done.stdout.split()], np.float32)
    spec = m["inputs"][0]
    expected = _example_module().image_input(str(tmp_path / "photo.png"), spec)  # NCHW, as example.py makes it
    if spec["layout"] == "NHWC":
        expected = expected.transpose(0, 2, 3, 1)  # as example.py's main() hands it to the model
    assert expected.shape == tuple(spec["shape"])
    np.testing.assert_allclose(from_bitmap, expected.reshape(-1), rtol=1e-5, atol=1e-5)
