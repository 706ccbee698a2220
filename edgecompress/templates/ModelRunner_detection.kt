    // ---- detection (a fragment of ModelRunner.kt, filled in by edgecompress/backends/kotlin.py) ----
    // The raw heads: OUTPUTS[BOX_OUTPUT] is N x A x 4 (a box per anchor, as the model encodes it) and
    // OUTPUTS[SCORE_OUTPUT] N x A x K (class scores: logits, or probabilities
    // where SCORES_ARE_LOGITS is false), times each one-value objectness output in
    // OBJECTNESS_OUTPUTS (YOLO-style), as the build's checks read them. Decoding the boxes and NMS are the
    // app's: topAnchors gives the raw top-scoring anchors, as example.py prints them without a decoder.
@DECODE_NOTE@
    /** One anchor: its best class, that class's score as a probability and its raw box values. */
    class Anchor(val index: Int, val classId: Int, val label: String, val score: Float, val box: FloatArray)

    /** The k anchors with the highest score over the classes, highest first (no decoding, no NMS). */
    fun topAnchors(input: FloatArray, k: Int = 5): List<Anchor> {
        val outputs = run(input)
        val boxes = outputs[BOX_OUTPUT].values
        val scores = outputs[SCORE_OUTPUT]
        val anchors = scores.spec.shape[1]
        val classes = scores.spec.shape[2]
        val best = IntArray(anchors)
        val prob = FloatArray(anchors)
        for (a in 0 until anchors) {
            for (c in 0 until classes) {
                val v = scores.values[a * classes + c]
                val p = if (SCORES_ARE_LOGITS) sigmoid(v) else v
                if (c == 0 || p > prob[a]) {
                    prob[a] = p
                    best[a] = c
                }
            }
            for (o in OBJECTNESS_OUTPUTS.indices) {
                val v = outputs[OBJECTNESS_OUTPUTS[o]].values[a]
                prob[a] *= if (OBJECTNESS_ARE_LOGITS[o]) sigmoid(v) else v
            }
        }
        return (0 until anchors).sortedByDescending { prob[it] }.take(k).map { a ->
            Anchor(a, best[a], labels.getOrElse(best[a]) { best[a].toString() }, prob[a],
                   boxes.copyOfRange(a * 4, a * 4 + 4))
        }
    }

    private fun sigmoid(v: Float): Float = (1.0 / (1.0 + Math.exp(-v.toDouble()))).toFloat()

    /** What example.py prints for the same input (without a decoder): the five top anchors. */
    fun describe(input: FloatArray): List<String> = topAnchors(input).map { a ->
        fmt("anchor %5d  class %d  score %.3f  box ", a.index, a.classId, a.score) + a.box.joinToString(" ") { fmt("%.3f", it) }
    }
