    // ---- embedding (a fragment of ModelRunner.kt, filled in by edgecompress/backends/kotlin.py) ----
    // Output 0 is the embedding vector: compare two with cosine() (re-identification, search).

    /** Output 0, the embedding of one input. */
    fun embed(input: FloatArray): FloatArray = run(input)[0].values

    /** The vector's length (1 for an L2-normalised embedding). */
    fun norm(v: FloatArray): Float = Math.sqrt(v.fold(0.0) { s, x -> s + x.toDouble() * x }).toFloat()

    /** Cosine similarity of two embeddings: 1 for the same direction, 0 for unrelated ones. */
    fun cosine(a: FloatArray, b: FloatArray): Float {
        require(a.size == b.size) { "embeddings of ${a.size} and ${b.size} values" }
        var dot = 0.0
        for (i in a.indices) dot += a[i].toDouble() * b[i]
        val lengths = norm(a).toDouble() * norm(b)
        return if (lengths > 0.0) (dot / lengths).toFloat() else 0f
    }

    /** The cosine similarity of two inputs' embeddings. */
    fun similarity(first: FloatArray, second: FloatArray): Float = cosine(embed(first), embed(second))

    /** What example.py prints for the same input: the vector's size, length and first values. */
    fun describe(input: FloatArray): List<String> {
        val v = embed(input)
        return listOf(fmt("%s: %d values, |v| %.3f; first: ", OUTPUTS[0].modelName, v.size, norm(v))
                      + v.take(8).joinToString(" ") { fmt("%.4f", it) })
    }

    /** What example.py prints for two inputs: the first's embedding, then how alike the two are. */
    fun describe(input: FloatArray, other: FloatArray): List<String> =
        describe(input) + listOf(fmt("cosine similarity of the two inputs: %.4f", similarity(input, other)))
