    // ---- an image as the input (a fragment of ModelRunner.kt, filled in by edgecompress/backends/kotlin.py) ----

    /** A photo or camera frame as run()'s input, preprocessed as the training images were (manifest.json's
     *  inputs[0].preprocessing): resized to IMAGE_HEIGHT x IMAGE_WIDTH, RGB (or luminance for one
     *  channel), times PIXEL_SCALE, minus MEAN, over STD, in the input's layout. */
    fun inputFrom(bitmap: Bitmap): FloatArray {
        val scaled = if (bitmap.width == IMAGE_WIDTH && bitmap.height == IMAGE_HEIGHT) bitmap
                     else Bitmap.createScaledBitmap(bitmap, IMAGE_WIDTH, IMAGE_HEIGHT, true)
        val pixels = IntArray(IMAGE_WIDTH * IMAGE_HEIGHT)
        scaled.getPixels(pixels, 0, IMAGE_WIDTH, 0, 0, IMAGE_WIDTH, IMAGE_HEIGHT)
        val channels = MEAN.size
        val nhwc = INPUT.layout == "NHWC"
        val input = FloatArray(pixels.size * channels)
        for (p in pixels.indices) {
            val r = (pixels[p] shr 16) and 0xFF
            val g = (pixels[p] shr 8) and 0xFF
            val b = pixels[p] and 0xFF
            // one channel: the luminance as Pillow's convert("L") computes it
            val values = if (channels == 1) intArrayOf((r * 19595 + g * 38470 + b * 7471 + 0x8000) shr 16)
                         else intArrayOf(r, g, b)
            for (c in 0 until channels) {
                val v = (values[c] * PIXEL_SCALE - MEAN[c]) / STD[c]
                input[if (nhwc) p * channels + c else c * pixels.size + p] = v
            }
        }
        return input
    }

