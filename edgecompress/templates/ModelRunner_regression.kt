    // ---- @FRAGMENT_TASK@ (a fragment of ModelRunner.kt, filled in by edgecompress/backends/kotlin.py) ----
    // Every output as numbers, by name.@RAW_NOTE@

    /** Every output's values by name, in OUTPUTS' order. */
    fun predict(input: FloatArray): Map<String, FloatArray> = run(input).associate { it.spec.name to it.values }

    /** What example.py prints for the same input: each output's first values. */
    fun describe(input: FloatArray): List<String> =
        run(input).map { o -> o.spec.name + ": " + o.values.take(8).joinToString(" ") { fmt("%.4f", it) } }
