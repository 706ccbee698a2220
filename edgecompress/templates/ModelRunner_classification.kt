    // ---- classification (a fragment of ModelRunner.kt, filled in by edgecompress/backends/kotlin.py) ----
    // Output 0 holds one score (a logit) per class; labels.txt, where the bundle has one, names them.

    /** The k most likely classes of output 0 with their softmax probabilities, most likely first. */
    fun classify(input: FloatArray, k: Int = 3): List<Pair<String, Float>> {
        val logits = run(input)[0].values
        val top = logits.fold(Float.NEGATIVE_INFINITY) { m, v -> maxOf(m, v) }
        val exp = FloatArray(logits.size) { Math.exp((logits[it] - top).toDouble()).toFloat() }
        val sum = exp.sum()
        return logits.indices.sortedByDescending { logits[it] }.take(k).map { c ->
            Pair(labels.getOrElse(c) { c.toString() }, exp[c] / sum)
        }
    }

    /** What example.py prints for the same input: the top 3 classes. */
    fun describe(input: FloatArray): List<String> =
        classify(input).map { (label, p) -> fmt("%12s  %.3f", label, p) }
