"""Uploaded files: checked by content, cleaned of metadata, stored under generated names."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import secrets
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flask import current_app
from PIL import Image, ImageOps, UnidentifiedImageError
from pypdf import PdfReader

from ..errors import FileTooLarge, UnsupportedFile, ValidationFailed

# Magic bytes -> (content type, extension, the file-name endings that may carry it).
KINDS: dict[str, tuple[str, str, set[str]]] = {
    "jpeg": ("image/jpeg", "jpg", {"jpg", "jpeg"}),
    "png": ("image/png", "png", {"png"}),
    "pdf": ("application/pdf", "pdf", {"pdf"}),
}
ALLOWED_DESCRIPTION = "JPEG or PNG images and PDF documents"


@dataclass(frozen=True)
class CheckedFile:
    """A file whose content was verified and re-encoded, ready to store."""

    data: bytes
    content_type: str
    extension: str
    original_name: str
    sha256: str
    width: int | None = None
    height: int | None = None
    page_count: int | None = None


def sniff(head: bytes) -> str | None:
    """The file kind named by the first bytes, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.lstrip(b"\r\n\t \x00\xef\xbb\xbf")[:5] == b"%PDF-":
        return "pdf"
    return None


def clean_filename(name: str | None) -> str:
    """A display name safe to show and to put in a Content-Disposition header."""
    name = unicodedata.normalize("NFC", os.path.basename((name or "").replace("\\", "/")))
    name = re.sub(r"[\x00-\x1f\x7f\"<>|:*?/]", "", name).strip(" .")
    return name[:200] or "file"


def _read_limited(stream: BinaryIO, limit: int) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"Files may be at most {limit // (1024 * 1024)} MB.")
    return data


def _check_image(data: bytes, kind: str, max_pixels: int) -> tuple[bytes, int, int]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width * height > max_pixels:
                    raise UnsupportedFile(
                        f"The image is {width}×{height} pixels; the limit is "
                        f"{max_pixels // 1_000_000} megapixels."
                    )
                probe.load()  # decode every pixel: a truncated or fake image fails here
                image = ImageOps.exif_transpose(probe)  # keep the orientation, drop the tag
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnsupportedFile("The image is too large to open safely.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnsupportedFile("The image is damaged or not a real JPEG/PNG file.") from exc

    # Pillow's encoders fall back on metadata read from the upload (a JPEG comment, for one):
    # keep only what drawing the pixels needs.
    image.info = {k: v for k, v in image.info.items() if k in ("transparency", "icc_profile")}
    out = io.BytesIO()
    if kind == "jpeg":
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(out, format="JPEG", quality=92, optimize=True)  # no exif= : metadata dropped
    else:
        image.save(out, format="PNG", optimize=True)  # text chunks and eXIf are not copied
    return out.getvalue(), image.width, image.height


def _check_pdf(data: bytes) -> int:
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise UnsupportedFile("Password-protected PDFs cannot be shared; remove the password.")
        pages = len(reader.pages)
    except UnsupportedFile:
        raise
    except Exception as exc:  # a hostile file can break the parser in any way (AttributeError, loops...)
        raise UnsupportedFile("The PDF is damaged and cannot be opened.") from exc
    if pages == 0:
        raise UnsupportedFile("The PDF has no pages.")
    return pages


def check_upload(stream: BinaryIO, filename: str | None) -> CheckedFile:
    """Verify an upload by its content and size; images are decoded and re-encoded."""
    if not filename:
        raise ValidationFailed("Choose a file to upload.", fields={"file": "required"})
    limit = current_app.config["MAX_UPLOAD_BYTES"]
    data = _read_limited(stream, limit)
    if not data:
        raise UnsupportedFile("The file is empty.")
    original = clean_filename(filename)
    suffix = original.rsplit(".", 1)[-1].lower() if "." in original else ""
    kind = sniff(data[:1024])
    if kind is None:
        raise UnsupportedFile(f"Only {ALLOWED_DESCRIPTION} can be attached.")
    content_type, extension, endings = KINDS[kind]
    if suffix not in endings:
        raise UnsupportedFile(
            f"The file is named “.{suffix or '(none)'}” but its content is "
            f"{extension.upper()}. Rename it or export it again."
        )
    width = height = pages = None
    if kind == "pdf":
        pages = _check_pdf(data)
    else:
        data, width, height = _check_image(data, kind, current_app.config["MAX_IMAGE_PIXELS"])
    return CheckedFile(
        data=data,
        content_type=content_type,
        extension=extension,
        original_name=original,
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        page_count=pages,
    )


def upload_dir() -> Path:
    """The private directory files are stored in (outside static/)."""
    path = Path(current_app.config["UPLOAD_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def store(checked: CheckedFile) -> str:
    """Write the file atomically under a new random name and return that name."""
    name = f"{secrets.token_hex(16)}.{checked.extension}"
    final = upload_dir() / name
    tmp = final.with_suffix(final.suffix + ".part")
    with open(tmp, "wb") as fh:
        fh.write(checked.data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return name


def path_of(stored_name: str) -> Path:
    """The on-disk path of a stored file; refuses anything that is not a generated name."""
    if not re.fullmatch(r"[0-9a-f]{32}\.(jpg|png|pdf)", stored_name):
        raise ValueError("not a stored file name")
    return upload_dir() / stored_name


def discard(stored_name: str) -> None:
    """Remove a stored file whose database row was never committed."""
    with contextlib.suppress(ValueError):
        path_of(stored_name).unlink(missing_ok=True)
