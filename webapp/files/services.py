"""Uploaded files: checked by content, cleaned of metadata, stored under generated names."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flask import current_app

from ..errors import DomainError, FileTooLarge, UnsupportedFile, ValidationFailed
from ..i18n import N_, translate
from . import content

log = logging.getLogger(__name__)

# Magic bytes -> (content type, extension, the file-name endings that may carry it).
KINDS: dict[str, tuple[str, str, set[str]]] = {
    "jpeg": ("image/jpeg", "jpg", {"jpg", "jpeg"}),
    "png": ("image/png", "png", {"png"}),
    "pdf": ("application/pdf", "pdf", {"pdf"}),
}
ALLOWED_DESCRIPTION = "JPEG or PNG images and PDF documents"  # as in the refusal below
NO_SUFFIX = N_("(none)")  # the ending of a file name without one, in a refusal


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
        raise FileTooLarge("Files may be at most %(mb)s MB.", mb=limit // (1024 * 1024))
    return data


class ConversionBusy(DomainError):
    """Every conversion slot stayed taken for IMAGE_QUEUE_SECONDS."""

    status = 503
    code = "busy"


CHILD_SCRIPT = Path(content.__file__).resolve()
_SLOTS_KEY = "huizhen.conversion_slots"


def _slots() -> threading.BoundedSemaphore:
    """This process's conversion slots (made on first use: after gevent patched threading)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    slots = app.extensions.get(_SLOTS_KEY)
    if slots is None:
        slots = app.extensions.setdefault(
            _SLOTS_KEY, threading.BoundedSemaphore(app.config["IMAGE_CONVERSIONS_AT_ONCE"]))
    return slots


@contextlib.contextmanager
def conversion_slot() -> Iterator[None]:
    """Hold one of the process's conversion slots; 503 if none frees up in IMAGE_QUEUE_SECONDS."""
    slots = _slots()
    if not slots.acquire(timeout=current_app.config["IMAGE_QUEUE_SECONDS"]):
        raise ConversionBusy(N_("The server is busy processing other uploads; try again in a minute."))
    try:
        yield
    finally:
        slots.release()


def check_content(data: bytes, kind: str) -> tuple[bytes, int | None, int | None, int | None]:
    """Decode and re-encode an image, or read a PDF, in a child process: (data, width, height, pages).

    ``subprocess`` is gevent's cooperative one under the gevent worker (monkey-patched), so
    waiting for the child yields to the hub; under threads it blocks only this request's thread.
    """
    config = current_app.config
    request = {"kind": kind, "max_pixels": config["MAX_IMAGE_PIXELS"],
               "memory_limit_mb": config["IMAGE_MEMORY_LIMIT_MB"]}
    payload = json.dumps(request).encode() + b"\n" + data
    try:
        done = subprocess.run([sys.executable, "-I", str(CHILD_SCRIPT)], input=payload, capture_output=True,
                              timeout=config["IMAGE_CHECK_TIMEOUT"], env={"PATH": os.defpath}, check=False)
    except subprocess.TimeoutExpired:
        log.warning("content check of a %s (%d bytes) timed out", kind, len(data))
        raise UnsupportedFile("The file took too long to process; export it again at a smaller size.") from None
    header_line, _, body = done.stdout.partition(b"\n")
    try:
        header = json.loads(header_line)
    except ValueError:
        header = None
    if done.returncode != 0 or not isinstance(header, dict) or len(body) != header.get("size"):
        log.warning("content check of a %s exited %s: %s", kind, done.returncode, done.stderr[-500:])
        raise UnsupportedFile("The file could not be processed; it may be damaged or too large.")
    if not header["ok"]:
        params = header.get("params") if isinstance(header.get("params"), dict) else {}
        raise UnsupportedFile(str(header["message"]), **params)
    return (body if kind != "pdf" else data), header["width"], header["height"], header["pages"]


def check_upload(stream: BinaryIO, filename: str | None) -> CheckedFile:
    """Verify an upload by its content and size; images are decoded and re-encoded."""
    if not filename:
        raise ValidationFailed("Choose a file to upload.", fields={"file": "required"})
    with conversion_slot():  # a waiting upload stays in its spooled file, not in memory
        return _check_upload(stream, filename)


def _check_upload(stream: BinaryIO, filename: str) -> CheckedFile:
    limit = current_app.config["MAX_UPLOAD_BYTES"]
    data = _read_limited(stream, limit)
    if not data:
        raise UnsupportedFile("The file is empty.")
    original = clean_filename(filename)
    suffix = original.rsplit(".", 1)[-1].lower() if "." in original else ""
    kind = sniff(data[:1024])
    if kind is None:
        raise UnsupportedFile("Only JPEG or PNG images and PDF documents can be attached.")
    content_type, extension, endings = KINDS[kind]
    if suffix not in endings:
        raise UnsupportedFile("The file is named “.%(suffix)s” but its content is %(kind)s. Rename it or "
                              "export it again.", suffix=suffix or translate(NO_SUFFIX), kind=extension.upper())
    data, width, height, pages = check_content(data, kind)
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
