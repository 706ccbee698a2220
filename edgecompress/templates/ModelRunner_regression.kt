    // ---- @FRAGMENT_TASK@ (a fragment of ModelRunner.kt, filled in by edgecompress/backends/kotlin.py) ----
    // Every output as numbers, by the model's own names.@RAW_NOTE@

    /** Every output's values by the model's own name for it (TensorSpec.modelName), in OUTPUTS' order. */
    fun predict(input: FloatArray): Map<String, FloatArray> = run(input).associate { it.spec.modelName to it.values }

    /** What example.py prints for the same input: each output's first values. */
    fun describe(input: FloatArray): List<String> =
        run(input).map { o ->
            o.spec.modelName + (if (o.spec.layout == "NHWC") " (NHWC)" else "") + ": " +
                o.values.take(8).joinToString(" ") { fmt("%.4f", it) }
        }
