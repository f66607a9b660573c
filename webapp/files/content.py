"""Decoding and re-encoding an upload's content, run in a short-lived child process.

The web worker never decodes pixels itself (one 7000×7000 PNG costs ~1.8 s of CPU and ~370 MB,
and under gevent the whole process, every consult room included, would wait). It runs this file
as a script, ``python -I webapp/files/content.py``, writes the request to its stdin and reads
the result from its stdout; ``webapp.files.services.check_content`` does that cooperatively.

This module imports neither Flask nor the rest of ``webapp`` so the child starts in ~40 ms.

Protocol (stdin): one JSON line ``{"kind": "png"|"jpeg"|"pdf", "max_pixels": int,
"memory_limit_mb": int}`` then the file's bytes. Stdout: one JSON line ``{"ok": true, "width",
"height", "pages", "size"}`` followed by ``size`` bytes of re-encoded content, or
``{"ok": false, "message": str, "params": dict}`` (an English msgid with its %(name)s
parameters, translated by the web worker).
"""

from __future__ import annotations

import io
import json
import sys
import warnings
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError


def N_(message: str) -> str:
    """Mark a message for the catalog (webapp.i18n.N_, which this module must not import)."""
    return message


class Refused(Exception):
    """The content is not acceptable; the message (a msgid and its parameters) is shown to the user."""

    def __init__(self, message: str, **params: Any) -> None:
        super().__init__(message)
        self.message = message
        self.params = params


def check_image(data: bytes, kind: str, max_pixels: int) -> tuple[bytes, int, int]:
    """Decode every pixel, apply and drop the orientation tag, re-encode without metadata."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width * height > max_pixels:
                    raise Refused(
                        N_("The image is %(width)s×%(height)s pixels; the limit is %(limit)s megapixels."),
                        width=width, height=height, limit=max_pixels // 1_000_000)
                probe.load()  # decode every pixel: a truncated or fake image fails here
                image = ImageOps.exif_transpose(probe)  # keep the orientation, drop the tag
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Refused(N_("The image is too large to open safely.")) from None
    except MemoryError:
        raise Refused(N_("The image needs more memory than the server allows for one upload.")) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise Refused(N_("The image is damaged or not a real JPEG/PNG file.")) from exc

    # Pillow's encoders fall back on metadata read from the upload (a JPEG comment, for one):
    # keep only what drawing the pixels needs.
    image.info = {k: v for k, v in image.info.items() if k in ("transparency", "icc_profile")}
    out = io.BytesIO()
    try:
        if kind == "jpeg":
            if image.mode not in ("RGB", "L"):
                image = image.convert("RGB")
            image.save(out, format="JPEG", quality=92, optimize=True)  # no exif= : metadata dropped
        else:
            image.save(out, format="PNG", optimize=True)  # text chunks and eXIf are not copied
    except (MemoryError, OSError):  # an encoder that cannot allocate reports OSError
        raise Refused(N_("The image needs more memory than the server allows for one upload.")) from None
    return out.getvalue(), image.width, image.height


def check_pdf(data: bytes) -> int:
    """The page count of a readable, unencrypted PDF."""
    from pypdf import PdfReader  # only PDFs pay for importing pypdf

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise Refused(N_("Password-protected PDFs cannot be shared; remove the password."))
        pages = len(reader.pages)
    except Refused:
        raise
    except Exception as exc:  # a hostile file can break the parser in any way (AttributeError, loops...)
        raise Refused(N_("The PDF is damaged and cannot be opened.")) from exc
    if pages == 0:
        raise Refused(N_("The PDF has no pages."))
    return pages


def process(request: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    """Check one file; returns the JSON header and the (re-encoded) bytes to send back."""
    kind = request["kind"]
    try:
        if kind == "pdf":
            return {"ok": True, "pages": check_pdf(data), "width": None, "height": None}, b""
        out, width, height = check_image(data, kind, int(request["max_pixels"]))
        return {"ok": True, "pages": None, "width": width, "height": height}, out
    except Refused as exc:
        return {"ok": False, "message": exc.message, "params": exc.params}, b""


def _limit_memory(megabytes: int) -> None:
    if megabytes > 0:
        import resource

        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main() -> int:
    """Serve one request from stdin to stdout."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    request = json.loads(stdin.readline())
    _limit_memory(int(request.get("memory_limit_mb", 0)))
    data = stdin.read()
    header, out = process(request, data)
    header["size"] = len(out)
    stdout.write(json.dumps(header).encode() + b"\n")
    stdout.write(out)
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
