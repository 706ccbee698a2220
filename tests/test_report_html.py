"""report.html's loss curve (the walkthrough: a linear axis squashed everything after the first points
into a flat line, so the page could not show whether the loss was still falling)."""
import re

from edgecompress.report_html import loss_svg


def _ys(svg: str) -> list:
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    return [float(p.split(",")[1]) for p in points]


def test_a_loss_falling_a_hundredfold_is_drawn_on_a_log_scale_so_the_tail_is_visible():
    curve = [[1, 10 * i, 100.0 / (i + 1) ** 2] for i in range(10)]  # 100 -> 1
    svg = loss_svg(curve)
    ys = _ys(svg)
    assert "log scale" in svg
    # the last three points (losses 2.0, 1.6, 1.2, 1.0 ...) still fall visibly: more than 10 px apart in all
    assert ys[-1] - ys[-4] > 10, ys
    assert len(re.findall(r"<text x=\"0\"", svg)) == 4  # four labelled ticks, not only min and max


def test_a_flat_or_non_positive_loss_keeps_a_linear_axis():
    svg = loss_svg([[1, s, v] for s, v in [(1, 0.5), (2, 0.4), (3, 0.45), (4, 0.3)]])
    assert "log scale" not in svg and "last 0.3" in svg
    svg = loss_svg([[1, 1, -1.0], [1, 2, 3.0]])  # a loss that can go negative (a feature loss, say)
    assert "log scale" not in svg
