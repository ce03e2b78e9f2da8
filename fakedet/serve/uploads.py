"""An upload's bytes to an RGB image, within the server's limits. What the bytes are is decided
by decoding them, never by the file name or the declared content type."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from fakedet.data.images import load_rgb


class UploadRejected(Exception):
    """An upload the server will not score: an HTTP status and one sentence for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_upload(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """The upload as RGB, decoded as `fakedet predict` decodes a file (`load_rgb`).

    The header is read first: an image over `max_pixels` is refused before a byte of it is
    decompressed, so a small file that would expand to gigabytes costs nothing.

    Raises:
        UploadRejected: 422 for empty, non-image, truncated or corrupt data; 413 for an image
            over `max_pixels`.
    """
    if not data:
        raise UploadRejected(422, f"{name} is empty (0 bytes); send the image file's contents.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
    except Image.DecompressionBombError:
        raise _too_many_pixels(name, None, max_pixels) from None
    except UnidentifiedImageError:
        raise UploadRejected(
            422,
            f"{name} is not an image format Pillow can read ({len(data)} bytes); send a "
            "JPEG, PNG, WebP, BMP, TIFF or GIF.",
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise _undecodable(name, exc) from None
    if width * height > max_pixels:
        raise _too_many_pixels(name, (width, height), max_pixels)
    try:
        return load_rgb(io.BytesIO(data))  # type: ignore[arg-type]  # Image.open takes a stream
    except Image.DecompressionBombError:
        raise _too_many_pixels(name, (width, height), max_pixels) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise _undecodable(name, exc) from None


def _too_many_pixels(name: str, size: tuple[int, int] | None, max_pixels: int) -> UploadRejected:
    stated = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "too large"
    return UploadRejected(
        413,
        f"{name} is {stated}, over this server's limit of {max_pixels:,} pixels "
        "(--max-pixels); send a smaller image.",
    )


def _undecodable(name: str, exc: Exception) -> UploadRejected:
    return UploadRejected(
        422,
        f"{name} could not be decoded ({exc.__class__.__name__}: {str(exc)[:160]}); it is "
        "truncated or corrupt.",
    )
