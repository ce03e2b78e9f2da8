"""What the calibration images looked like (size, file format, JPEG quality), read from file
headers, and the one warning predict gives when the images it scores fall outside that: the
calibrated realness and an `fpr`/`fnr` threshold's guarantee hold only for images like those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fakedet.checkpoints.calibration import Calibration, InputProfile

# The IJG luminance quantization table at quality 50 (JPEG standard, Annex K). Encoders that
# follow libjpeg scale it by quality; matching a file's table against the scaled ones reads the
# quality it was saved at.
_IJG_LUMINANCE = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)  # fmt: skip


def _scaled_tables() -> np.ndarray:
    """(100, 64): the luminance table libjpeg writes at quality 1..100, entries sorted."""
    quality = np.arange(1, 101, dtype=np.float64)[:, None]
    scale = np.where(quality < 50, 5000.0 / quality, 200.0 - 2.0 * quality)
    tables = np.clip(np.floor((_IJG_LUMINANCE * scale + 50.0) / 100.0), 1, 255)
    return np.sort(tables, axis=1)


_TABLES = _scaled_tables()


def jpeg_quality(image: Image.Image) -> int | None:
    """The libjpeg quality whose luminance table is closest to this JPEG's (None: not a JPEG or
    no table). Entries are compared sorted, so the table's storage order does not matter."""
    tables = getattr(image, "quantization", None)
    if image.format != "JPEG" or not tables or 0 not in tables:
        return None
    table = np.sort(np.asarray(tables[0], dtype=np.float64))
    if table.shape != (64,):
        return None
    return int(np.argmin(np.abs(_TABLES - table).sum(axis=1))) + 1


def _header(path: str | Path) -> tuple[int, int, str, int | None] | None:
    """(width, height, format, JPEG quality) from the file's header; None if unreadable."""
    try:
        with Image.open(path) as image:
            return image.width, image.height, image.format or "unknown", jpeg_quality(image)
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


def profile_images(paths: Sequence[str | Path]) -> InputProfile | None:
    """Sizes, formats and JPEG qualities of the images (headers only); None when none reads."""
    headers = [found for found in map(_header, paths) if found is not None]
    if not headers:
        return None
    qualities = [quality for *_, quality in headers if quality is not None]
    return InputProfile(
        images=len(headers),
        min_side=min(min(width, height) for width, height, *_ in headers),
        max_side=max(max(width, height) for width, height, *_ in headers),
        formats=sorted({kind for _, _, kind, _ in headers}),
        jpeg_quality=[min(qualities), max(qualities)] if qualities else None,
    )


def _unlike(header: tuple[int, int, str, int | None], profile: InputProfile) -> str | None:
    """Why an image falls outside the profile, or None."""
    width, height, kind, quality = header
    if kind not in profile.formats:
        return f"format {kind}"
    if min(width, height) < profile.min_side or max(width, height) > profile.max_side:
        return f"size {width}x{height}"
    if quality is not None and profile.jpeg_quality is not None:
        low, high = profile.jpeg_quality
        if not low <= quality <= high:
            return f"JPEG quality {quality}"
    return None


def input_drift(paths: Sequence[str | Path], profile: InputProfile) -> str | None:
    """One sentence saying how many images fall outside what the calibration saw, with an
    example, or None when all are alike (unreadable files are left to the scoring to report)."""
    unlike = []
    for path in paths:
        header = _header(path)
        reason = None if header is None else _unlike(header, profile)
        if reason is not None:
            unlike.append((path, reason))
    if not unlike:
        return None
    path, reason = unlike[0]
    return (
        f"{len(unlike)} of {len(paths)} images differ from the calibration images "
        f"({profile.describe()}), e.g. {path}: {reason}; calibrated realness and the "
        "threshold's guarantee assume images like those, so calibrate on images like these "
        "(`fakedet calibrate`) to restore them."
    )


def report_drift(
    paths: Sequence[str | Path], calibration: Calibration, warn: Callable[[str], None]
) -> None:
    """Call `warn` once when the images differ from the calibration's (nothing when the
    calibration stores no profile: fitted before fakedet recorded one, or not fitted)."""
    if calibration.inputs is None:
        return
    message = input_drift(paths, calibration.inputs)
    if message is not None:
        warn(message)
