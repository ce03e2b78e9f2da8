"""hardest.png: captions, row titles and images never overlap, whatever the image count."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakedet.plots import _pyplot, hardest_figure, plot_hardest

# (fakes, reals, file-name stem, image width x height, figure caption)
CASES = [
    (1, 1, "a", (32, 32), ""),
    (3, 3, "a_rather_long_file_name_that_gets_cut", (48, 16), "val split, epoch 3"),
    (10, 10, "img", (16, 48), "a much longer caption: test split, epoch 12 of a long run"),
    (5, 1, "a", (64, 64), "val split, epoch 2"),  # a short row under a full one
    (8, 0, "only_fakes_here", (32, 32), "val split, epoch 1"),
    (0, 3, "only_reals", (40, 24), ""),
    (1, 0, "b", (24, 24), "one image under a caption far wider than the image column"),
    (2, 8, "x" * 40, (24, 40), "train split"),
]


def _dataset(root: Path, fakes: int, reals: int, stem: str, size: tuple[int, int]):
    """Tiny PNGs (one unreadable file among up to 8 reals) with realness scores and labels."""
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for number, label in itertools.chain(
        ((n, 0.0) for n in range(fakes)), ((n, 1.0) for n in range(reals))
    ):
        path = root / f"{stem}_{'real' if label else 'fake'}_{number}.png"
        if label and number == 1 and reals <= 8:
            path.write_bytes(b"not a png")  # drawn as the "unreadable" placeholder
        else:
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
        paths.append(str(path))
        labels.append(label)
    scores = rng.uniform(0, 1, len(paths))
    return paths, scores, np.array(labels)


def _drawn_texts(figure, monkeypatch) -> list:
    """Draw `figure` as savefig does and return the non-empty texts actually drawn."""
    from matplotlib.text import Text

    drawn = []
    original = Text.draw

    def recording_draw(self, renderer):
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        return original(self, renderer)

    with monkeypatch.context() as patch:
        patch.setattr(Text, "draw", recording_draw)
        figure.canvas.draw()
    return drawn


@pytest.mark.parametrize(("fakes", "reals", "stem", "size", "caption"), CASES)
def test_hardest_captions_never_overlap_images_or_each_other(
    tmp_path, monkeypatch, fakes, reals, stem, size, caption
):
    paths, scores, labels = _dataset(tmp_path, fakes, reals, stem, size)
    figure = hardest_figure(paths, scores, labels, per_class=8, caption=caption)
    try:
        texts = _drawn_texts(figure, monkeypatch)
        renderer = figure.canvas.get_renderer()
        image_axes = [axis for axis in figure.get_axes() if axis.images]
        assert len(image_axes) == min(fakes, 8) + min(reals, 8) - (2 <= reals <= 8)
        text_boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in texts]
        axis_boxes = [axis.get_window_extent(renderer) for axis in image_axes]
        captions = [text for text, _ in text_boxes if "\n" in text and text[0].isdigit()]
        assert len(captions) == min(fakes, 8) + min(reals, 8)  # one per image, unreadable too
        canvas = figure.bbox.padded(1)
        problems = [("cut off", text) for text, box in text_boxes if not _inside(box, canvas)]
        problems += [
            ("over an image", text)
            for text, box in text_boxes
            if any(box.overlaps(axis_box) for axis_box in axis_boxes)
        ]
        problems += [
            ("over another text", text, other)
            for (text, box), (other, other_box) in itertools.combinations(text_boxes, 2)
            if box.overlaps(other_box)
        ]
        problems += [
            ("images overlap", first, second)
            for first, second in itertools.combinations(axis_boxes, 2)
            if first.overlaps(second)
        ]
        assert not problems
    finally:
        _pyplot().close(figure)


def _inside(box, canvas) -> bool:
    return (
        box.x0 >= canvas.x0 and box.y0 >= canvas.y0 and box.x1 <= canvas.x1 and box.y1 <= canvas.y1
    )


def test_plot_hardest_writes_a_png(tmp_path):
    paths, scores, labels = _dataset(tmp_path, 3, 2, "img", (32, 32))
    written = plot_hardest(paths, scores, labels, tmp_path / "hardest.png", caption="val")
    assert written == tmp_path / "hardest.png"
    with Image.open(written) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100
