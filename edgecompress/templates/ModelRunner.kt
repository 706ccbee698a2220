// Drop-in LiteRT runner for this bundle's model.tflite (Android, Kotlin): @TASK_TITLE@.
//
// build.gradle:  implementation("com.google.ai.edge.litert:litert:1.+")
// Put model.tflite (and labels.txt, where the bundle has one) in app/src/main/assets/. The input's
// layout and preprocessing are in manifest.json; every shape, type, scale and zero point below was
// filled in from manifest.json when the bundle was written (scale 0 = a float tensor).
//
//     val runner = ModelRunner(context)
//     val input = @USAGE_INPUT@
//     @USAGE_CALL@
//     runner.describe(input).forEach { println(it) }  // what example.py prints
//
// edgecompress's tests compile it against stand-ins of the Android and LiteRT classes (where kotlinc is
// installed); it has not run on a phone there: check it in your app.
package com.example.edgecompress

import android.content.Context
@IMPORTS@import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.io.IOException
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import java.util.Locale

/** One tensor as model.tflite declares it (manifest.json's inputs[i] / outputs[i]); modelName is the
 *  model's own name for it (output_0, a dict key: manifest.json's model_name) where the file renamed it. */
class TensorSpec(val name: String, val shape: IntArray, val dtype: String, val scale: Float, val zeroPoint: Int,
                 val layout: String?, val modelName: String = name) {
    val size: Int get() = shape.fold(1) { total, d -> total * d }
    val quantized: Boolean get() = scale > 0f
}

/** One output of one run, dequantized to floats, row-major in [spec]'s shape (batch of 1 first). */
class Output(val spec: TensorSpec, val values: FloatArray)

class ModelRunner(context: Context, threads: Int = 4) {
    companion object {
        const val TASK = "@TASK@"
        val INPUT = @INPUT_SPEC@
        // every output, in the model's order (manifest.json's outputs), each read with its own scale and zero point
        val OUTPUTS = listOf(
@OUTPUT_SPECS@
        )
@INPUT_CONSTANTS@@TASK_CONSTANTS@    }

    // the input's quantization (manifest.json: inputs[0].quantization; 0 = a float input)
    private val inputScale = @INPUT_SCALE@f
    private val inputZeroPoint = @INPUT_ZERO_POINT@

    private val interpreter: Interpreter
    private val outputIndex: IntArray  // OUTPUTS[i]'s index in the interpreter: the file may order them otherwise
    val labels: List<String>

    init {
        val options = Interpreter.Options().setNumThreads(threads)  // XNNPACK is on by default
        interpreter = Interpreter(loadModel(context, "model.tflite"), options)
        outputIndex = IntArray(OUTPUTS.size) { i -> indexOf(OUTPUTS[i].name, i) }
        labels = try {
            context.assets.open("labels.txt").bufferedReader().readLines()
        } catch (e: IOException) {
            emptyList()  // no labels.txt in this bundle: classes are shown by number
        }
    }

    /** Every output for one input, in OUTPUTS' order. `input`: preprocessed floats in the model's
     *  input layout (INPUT.layout; see manifest.json), one sample, row-major. */
    fun run(input: FloatArray): List<Output> {
        require(input.size == INPUT.size) {
            "the input has ${input.size} values; ${INPUT.name} takes ${INPUT.size} (${INPUT.shape.joinToString("x")})"
        }
        val inBuffer = ByteBuffer.allocateDirect(interpreter.getInputTensor(0).numBytes()).order(ByteOrder.nativeOrder())
        for (v in input) putValue(inBuffer, v)
        inBuffer.rewind()
        val buffers = HashMap<Int, Any>()
        for (i in OUTPUTS.indices) {  // one buffer per output, as large as the file's tensor
            val bytes = interpreter.getOutputTensor(outputIndex[i]).numBytes()
            buffers[outputIndex[i]] = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder())
        }
        interpreter.runForMultipleInputsOutputs(arrayOf<Any>(inBuffer), buffers)
        return OUTPUTS.mapIndexed { i, spec -> Output(spec, readValues(buffers.getValue(outputIndex[i]) as ByteBuffer, spec)) }
    }

@INPUT_CODE@@TASK_CODE@
    fun close() = interpreter.close()

    private fun indexOf(name: String, fallback: Int): Int = try {
        interpreter.getOutputIndex(name)
    } catch (e: IllegalArgumentException) {
        fallback  // a converter that renamed the tensor: the file's own order
    }

    private fun putValue(buffer: ByteBuffer, v: Float) {
        when (INPUT.dtype) {
            "int8" -> buffer.put((Math.round(v / inputScale) + inputZeroPoint).coerceIn(-128, 127).toByte())
            "uint8" -> buffer.put((Math.round(v / inputScale) + inputZeroPoint).coerceIn(0, 255).toByte())
            "float32" -> buffer.putFloat(v)
            else -> throw IllegalStateException("input ${INPUT.name} is ${INPUT.dtype}: fill its buffer yourself")
        }
    }

    private fun readValues(buffer: ByteBuffer, spec: TensorSpec): FloatArray {
        buffer.rewind()
        return FloatArray(spec.size) {
            val raw = when (spec.dtype) {
                "int8" -> buffer.get().toFloat()
                "uint8" -> (buffer.get().toInt() and 0xFF).toFloat()
                "int16" -> buffer.getShort().toFloat()
                "int32" -> buffer.getInt().toFloat()
                "int64" -> buffer.getLong().toFloat()
                "float32" -> buffer.getFloat()
                else -> throw IllegalStateException("output ${spec.name} is ${spec.dtype}: read its buffer yourself")
            }
            if (spec.quantized) (raw - spec.zeroPoint) * spec.scale else raw
        }
    }

    private fun fmt(pattern: String, vararg args: Any): String = String.format(Locale.ROOT, pattern, *args)

    private fun loadModel(context: Context, name: String): MappedByteBuffer {
        val fd = context.assets.openFd(name)
        FileInputStream(fd.fileDescriptor).channel.use { channel ->
            return channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        }
    }
}
