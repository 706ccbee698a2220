// Drop-in LiteRT runner for this bundle's model.tflite (Android, Kotlin).
//
// build.gradle:  implementation("com.google.ai.edge.litert:litert:1.+")
// Put model.tflite and labels.txt in app/src/main/assets/. The input/output shapes, the layout
// (NHWC when manifest.json says so) and the preprocessing are in manifest.json; the scale and
// zero point below were filled in from it when the bundle was written.
//
// Not compiled or run by edgecompress's tests (no Android toolchain there): check it in your app.
package com.example.edgecompress

import android.content.Context
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel

class ModelRunner(context: Context, threads: Int = 4) {
    // From manifest.json: inputs[0].quantization / outputs[0].quantization (0 = a float tensor).
    private val inputScale = @INPUT_SCALE@f
    private val inputZeroPoint = @INPUT_ZERO_POINT@
    private val outputScale = @OUTPUT_SCALE@f
    private val outputZeroPoint = @OUTPUT_ZERO_POINT@

    private val interpreter: Interpreter
    val labels: List<String>

    init {
        val options = Interpreter.Options().setNumThreads(threads)  // XNNPACK is on by default
        interpreter = Interpreter(loadModel(context, "model.tflite"), options)
        labels = context.assets.open("labels.txt").bufferedReader().readLines()
    }

    /** input: preprocessed floats in the model's input layout (see manifest.json), one sample. */
    fun classify(input: FloatArray): Pair<String, Float> {
        val inTensor = interpreter.getInputTensor(0)
        val quantized = inputScale > 0f
        val buffer = ByteBuffer.allocateDirect(inTensor.numBytes()).order(ByteOrder.nativeOrder())
        for (v in input) {
            if (quantized) {
                val q = Math.round(v / inputScale) + inputZeroPoint
                buffer.put(q.coerceIn(-128, 127).toByte())
            } else {
                buffer.putFloat(v)
            }
        }
        buffer.rewind()
        val outTensor = interpreter.getOutputTensor(0)
        val n = outTensor.shape().last()
        val scores = FloatArray(n)
        if (outputScale > 0f) {
            val out = Array(1) { ByteArray(n) }
            interpreter.run(buffer, out)
            for (i in 0 until n) scores[i] = (out[0][i] - outputZeroPoint) * outputScale
        } else {
            val out = Array(1) { FloatArray(n) }
            interpreter.run(buffer, out)
            out[0].copyInto(scores)
        }
        val best = scores.indices.maxByOrNull { scores[it] } ?: 0
        return Pair(labels.getOrElse(best) { best.toString() }, scores[best])
    }

    fun close() = interpreter.close()

    private fun loadModel(context: Context, name: String): MappedByteBuffer {
        val fd = context.assets.openFd(name)
        FileInputStream(fd.fileDescriptor).channel.use { channel ->
            return channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        }
    }
}
