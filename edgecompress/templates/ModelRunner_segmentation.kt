    // ---- segmentation (a fragment of ModelRunner.kt, filled in by edgecompress/backends/kotlin.py) ----
    // Output 0 holds a score per class and pixel: NHWC or NCHW, as OUTPUTS[0].layout says.

    /** The class of each pixel: classes[y * width + x], at the output's size. */
    class Mask(val width: Int, val height: Int, val classes: IntArray)

    /** The per-pixel argmax over output 0's class scores. */
    fun segment(input: FloatArray): Mask {
        val out = run(input)[0]
        val s = out.spec.shape
        check(s.size == 4) { "output ${out.spec.name} has shape ${s.joinToString("x")}, not N x C x H x W or N x H x W x C" }
        val nhwc = out.spec.layout == "NHWC"
        val classes = if (nhwc) s[3] else s[1]
        val height = if (nhwc) s[1] else s[2]
        val width = if (nhwc) s[2] else s[3]
        val pixels = height * width
        val v = out.values
        val mask = IntArray(pixels) { p ->
            var best = 0
            for (c in 1 until classes) {
                val score = if (nhwc) v[p * classes + c] else v[c * pixels + p]
                val bestScore = if (nhwc) v[p * classes + best] else v[best * pixels + p]
                if (score > bestScore) best = c
            }
            best
        }
        return Mask(width, height, mask)
    }

    /** Each class present in the mask and its share of the pixels, in class order. */
    fun classAreas(mask: Mask): List<Pair<Int, Float>> {
        val counts = IntArray(mask.classes.fold(0) { m, c -> maxOf(m, c) } + 1)
        for (c in mask.classes) counts[c]++
        return counts.indices.filter { counts[it] > 0 }.map { Pair(it, counts[it].toFloat() / mask.classes.size) }
    }

    /** The mask as an ARGB Bitmap at the output's size, one colour per class, to scale and draw over the
     *  image; class 0 (the background, in most segmenters) is left transparent. */
    fun maskBitmap(mask: Mask): Bitmap {
        val colours = IntArray(mask.classes.size) { i ->
            val c = mask.classes[i]
            if (c == 0) 0 else PALETTE[(c - 1) % PALETTE.size]
        }
        return Bitmap.createBitmap(colours, mask.width, mask.height, Bitmap.Config.ARGB_8888)
    }

    /** What example.py prints for the same input: each class's share of the pixels, named from labels.txt
     *  where the bundle has one (padded to the longest name, so that the shares line up). */
    fun describe(input: FloatArray): List<String> {
        val nameWidth = labels.fold(0) { m, label -> maxOf(m, label.length) }
        return classAreas(segment(input)).map { (c, share) ->
            val named = if (labels.isEmpty()) "" else " " + labels.getOrElse(c) { "" }.padEnd(nameWidth)
            fmt("class %3d%s  %5.1f%% of the pixels", c, named, 100 * share)
        }
    }
