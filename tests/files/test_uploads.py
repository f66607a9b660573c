"""Uploads are judged by their content, through ``check_upload`` and through the HTTP route.

Refused files leave nothing behind (no Attachment row, no file on disk); accepted images are
decoded and re-encoded without EXIF/GPS, text chunks or comments; files live outside static/
under server-generated names and are served with nosniff and private, no-store caching.
"""

from __future__ import annotations

import functools
import io
import re
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageOps, PngImagePlugin
from PIL.ExifTags import IFD
from pypdf import PdfWriter
from sqlalchemy import func, select

from tests.conftest import CSRF_RE, login
from webapp.consults import services as consults
from webapp.errors import DomainError, FileTooLarge, UnsupportedFile
from webapp.extensions import db
from webapp.files.services import check_upload
from webapp.models import Attachment

GPS = {1: "N", 2: (39.0, 54.0, 27.0), 3: "E", 4: (116.0, 23.0, 30.0)}


# --- files ------------------------------------------------------------------------------------------


def png(size=(16, 12), colour="red", **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG", **save)
    return buf.getvalue()


def jpeg(size=(64, 48), **save) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buf, format="JPEG", quality=90, **save)
    return buf.getvalue()


def gps_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0110] = "Model X"
    if orientation is not None:
        exif[0x0112] = orientation
    exif.get_ifd(IFD.GPSInfo).update(GPS)
    return exif


def jpeg_with_gps() -> bytes:
    """40x20, left half red, right half blue; orientation 6 (turn 90° clockwise to display); GPS."""
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=gps_exif(orientation=6),
             comment=b"Patient Zhang Wei, Qingshan village")
    return buf.getvalue()


def png_with_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Dr Li, Qingshan County Hospital")
    info.add_text("Comment", "Patient Zhang Wei, ID 620102198001011234")
    info.add_itxt("Location", "39.9N 116.4E")
    data = png(size=(30, 20), colour="green", pnginfo=info, exif=gps_exif())
    return data + b"<html><script>alert(1)</script></html>"  # trailing bytes after IEND


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    """A complete, valid 1-bit PNG of the given size, all black: a few KB that decode to huge."""
    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def pdf(pages: int = 3) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def encrypted_pdf() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    writer.encrypt("secret")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def handmade_pdf(objects: list[bytes], trailer: bytes | None = None) -> bytes:
    """A PDF with a correct xref table around the given object bodies (object 1 is the root)."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n" + (trailer or b"<< /Size %d /Root 1 0 R >>" % (len(objects) + 1))
    out += b"\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


# (id, content, file name, status, part of the message)
REFUSED = [
    ("png-named-pdf", lambda: png(), "scan.pdf", 415, "named “.pdf” but its content is PNG"),
    ("jpeg-named-png", lambda: jpeg(), "photo.png", 415, "named “.png” but its content is JPG"),
    ("pdf-named-jpg", lambda: pdf(1), "report.jpg", 415, "content is PDF"),
    ("html-named-jpg", lambda: b"<!doctype html><script>alert(document.cookie)</script>", "photo.jpg", 415,
     "Only JPEG or PNG images and PDF documents can be attached."),
    ("svg-named-png", lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
     "x.png", 415, "Only JPEG or PNG images and PDF documents"),
    ("exe-named-pdf", lambda: b"MZ\x90\x00" + b"\x00" * 200, "lab.pdf", 415, "Only JPEG or PNG"),
    ("no-extension", lambda: png(), "scan", 415, "named “.(none)”"),
    ("empty", lambda: b"", "empty.png", 415, "The file is empty."),
    ("bomb-30000x30000", lambda: png_bomb(30000, 30000), "xray.png", 415, "too large to open safely"),
    ("over-pixel-limit", lambda: png_bomb(8000, 8000), "xray.png", 415, "8000×8000 pixels; the limit is 50"),
    ("truncated-jpeg", lambda: jpeg()[: len(jpeg()) // 2], "ecg.jpg", 415, "damaged or not a real JPEG/PNG"),
    ("jpeg-magic-only", lambda: b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20, "ecg.jpg", 415, "damaged"),
    ("truncated-png", lambda: png(size=(200, 200))[:80], "ecg.png", 415, "damaged or not a real JPEG/PNG"),
    ("damaged-pdf", lambda: b"%PDF-1.7\n" + bytes(range(256)) * 8, "labs.pdf", 415, "The PDF is damaged"),
    ("pdf-self-reference", lambda: handmade_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"2 0 R"]),
     "labs.pdf", 415, "The PDF is damaged"),
    ("pdf-trailer-not-a-dict", lambda: handmade_pdf(
        [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Count 1 /Kids [ 3 0 R ] >>",
         b"<< /Type /Page /Parent 2 0 R /MediaBox [ 0 0 200 200 ] >>"], trailer=b"(not a dictionary)"),
     "labs.pdf", 415, "The PDF is damaged"),
    ("pdf-no-pages", lambda: pdf(0), "empty.pdf", 415, "The PDF has no pages."),
    ("encrypted-pdf", encrypted_pdf, "locked.pdf", 415, "Password-protected PDFs cannot be shared"),
]


# --- helpers ----------------------------------------------------------------------------------------


def files_on_disk(app) -> set[str]:
    root = Path(app.config["UPLOAD_DIR"])
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def attachment_rows() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(Attachment))


@pytest.fixture
def draft(app, make):
    """A rural doctor signed in over HTTP, with a draft consult to attach files to."""
    doctor = make.rural(email="uploader@test.example")
    consult = make.draft(doctor)
    client = app.test_client()
    assert login(client, doctor).status_code == 302
    db.session.rollback()
    return client, consult.ref, doctor


def upload(client, ref: str, data: bytes, name: str, description: str = ""):
    """Upload through the edit page's form, as the browser does."""
    page = client.get(f"/consults/{ref}/edit")
    assert page.status_code == 200
    token = CSRF_RE.search(page.get_data(as_text=True)).group(1)
    return client.post(f"/consults/{ref}/attachments", data={
        "csrf_token": token, "back": "edit", "description": description,
        "file": (io.BytesIO(data), name),
    }, content_type="multipart/form-data")


def message(response) -> str:
    found = re.search(r'<p class="lede">(.*?)</p>', response.get_data(as_text=True), re.S)
    return found.group(1) if found else response.get_data(as_text=True)[:300]


def stored_attachment() -> Attachment:
    db.session.rollback()
    rows = list(db.session.scalars(select(Attachment)))
    assert len(rows) == 1
    return rows[0]


def stored_bytes(app, att: Attachment) -> bytes:
    return (Path(app.config["UPLOAD_DIR"]) / att.stored_name).read_bytes()


# --- refused ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "name", "status", "text"),
                         [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_check_upload_refuses(app, content, name, status, text):
    with pytest.raises(DomainError) as info:
        check_upload(io.BytesIO(content()), name)
    assert info.value.status == status
    assert isinstance(info.value, UnsupportedFile)
    assert text in info.value.message


@pytest.mark.parametrize(("content", "name", "status", "text"),
                         [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_http_upload_refuses_and_keeps_nothing(app, draft, content, name, status, text):
    client, ref, _ = draft
    before = files_on_disk(app)
    r = upload(client, ref, content(), name)
    assert r.status_code == status, message(r)
    assert text in message(r)
    assert attachment_rows() == 0
    assert files_on_disk(app) == before, "a refused upload left a file behind"


def test_http_upload_refusal_as_json(app, draft):
    client, ref, _ = draft
    page = client.get(f"/consults/{ref}/edit")
    token = CSRF_RE.search(page.get_data(as_text=True)).group(1)
    r = client.post(f"/consults/{ref}/attachments", data={
        "csrf_token": token, "file": (io.BytesIO(png()), "scan.pdf")},
        content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert r.status_code == 415
    assert r.get_json()["error"] == "unsupported_file"
    assert "PNG" in r.get_json()["message"]


def test_file_over_max_upload_bytes_is_413(app, draft, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_UPLOAD_BYTES", 4096)
    big = jpeg(size=(256, 256))
    assert len(big) > 4096
    with pytest.raises(FileTooLarge) as info:
        check_upload(io.BytesIO(big), "big.jpg")
    assert info.value.status == 413

    client, ref, _ = draft
    before = files_on_disk(app)
    r = upload(client, ref, big, "big.jpg")
    assert r.status_code == 413
    assert "Files may be at most" in message(r)
    assert attachment_rows() == 0 and files_on_disk(app) == before

    # Exactly at the limit is fine.
    assert check_upload(io.BytesIO(png()), "ok.png").content_type == "image/png"


def test_request_over_max_content_length_is_413(app, draft, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 8 * 1024)
    client, ref, _ = draft
    before = files_on_disk(app)
    r = upload(client, ref, jpeg(size=(512, 512)), "huge.jpg")
    assert r.status_code == 413
    assert "larger than the limit" in message(r)
    assert attachment_rows() == 0 and files_on_disk(app) == before


def test_missing_file_is_422(app, draft):
    client, ref, _ = draft
    page = client.get(f"/consults/{ref}/edit")
    token = CSRF_RE.search(page.get_data(as_text=True)).group(1)
    r = client.post(f"/consults/{ref}/attachments", data={"csrf_token": token, "back": "edit"},
                    content_type="multipart/form-data")
    assert r.status_code == 422 and "Choose a file to upload." in message(r)
    with pytest.raises(DomainError):
        check_upload(io.BytesIO(png()), "")
    assert attachment_rows() == 0


def test_attachment_limit_per_consult(app, draft, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_ATTACHMENTS_PER_CONSULT", 1)
    client, ref, _ = draft
    assert upload(client, ref, png(), "one.png").status_code == 302
    before = files_on_disk(app)
    r = upload(client, ref, png(colour="blue"), "two.png")
    assert r.status_code == 422 and "maximum number of attachments" in message(r)
    assert attachment_rows() == 1 and files_on_disk(app) == before


def test_nothing_half_stored_when_the_database_fails(app, draft, monkeypatch):
    """The file is written first; if the row cannot be committed the file is removed again."""
    _, ref, doctor = draft
    before = files_on_disk(app)

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(consults, "record", broken)
    with pytest.raises(RuntimeError):
        consults.add_attachment(doctor, ref, io.BytesIO(png()), "ecg.png")
    assert attachment_rows() == 0
    assert files_on_disk(app) == before


# --- accepted and cleaned --------------------------------------------------------------------------


def test_jpeg_exif_gps_and_comment_are_stripped_orientation_kept(app, draft):
    original = jpeg_with_gps()
    probe = Image.open(io.BytesIO(original))
    assert probe.getexif().get_ifd(IFD.GPSInfo), "the test file really carries GPS"
    assert probe.getexif()[0x0112] == 6

    checked = check_upload(io.BytesIO(original), "IMG_0001.JPG")
    assert checked.content_type == "image/jpeg" and (checked.width, checked.height) == (20, 40)

    client, ref, _ = draft
    r = upload(client, ref, original, "IMG_0001.JPG", "Wound, day 3")
    assert r.status_code == 302, message(r)
    att = stored_attachment()
    assert att.content_type == "image/jpeg" and (att.width, att.height) == (20, 40)
    data = stored_bytes(app, att)
    assert att.size_bytes == len(data)
    stored = Image.open(io.BytesIO(data))
    assert stored.format == "JPEG"
    assert dict(stored.getexif()) == {}, "EXIF survived"
    assert stored.getexif().get_ifd(IFD.GPSInfo) == {}
    assert "exif" not in stored.info and "comment" not in stored.info
    for secret in (b"Exif", b"PhoneMaker", b"Model X", b"Zhang Wei"):
        assert secret not in data
    # Upright as the camera meant it: turned 90° clockwise, so the red half is now on top.
    assert stored.size == (20, 40)
    top, bottom = stored.convert("RGB").getpixel((10, 5)), stored.convert("RGB").getpixel((10, 34))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    assert stored.size == ImageOps.exif_transpose(probe).size


def test_png_text_chunks_exif_and_trailing_bytes_are_stripped(app, draft):
    original = png_with_text()
    assert Image.open(io.BytesIO(original)).text, "the test file really carries text chunks"
    client, ref, _ = draft
    r = upload(client, ref, original, "scan.png")
    assert r.status_code == 302, message(r)
    att = stored_attachment()
    data = stored_bytes(app, att)
    stored = Image.open(io.BytesIO(data))
    assert stored.format == "PNG" and stored.size == (30, 20)
    assert stored.text == {}
    assert dict(stored.getexif()) == {}
    for chunk in (b"tEXt", b"iTXt", b"zTXt", b"eXIf"):
        assert chunk not in data
    for secret in (b"Zhang Wei", b"620102198001011234", b"<script", b"PhoneMaker"):
        assert secret not in data
    assert data.endswith(_chunk(b"IEND", b""))


def test_valid_pdf_is_accepted_with_its_page_count(app, draft):
    original = pdf(3)
    checked = check_upload(io.BytesIO(original), "labs.pdf")
    assert checked.page_count == 3 and checked.content_type == "application/pdf"
    client, ref, _ = draft
    r = upload(client, ref, original, "labs.pdf", "Blood panel")
    assert r.status_code == 302, message(r)
    att = stored_attachment()
    assert att.page_count == 3 and att.content_type == "application/pdf"
    assert att.width is None and att.description == "Blood panel"
    assert stored_bytes(app, att) == original
    page = client.get(f"/consults/{ref}/edit")
    assert "3 p." in page.get_data(as_text=True)


def test_stored_under_upload_dir_with_generated_names(app, draft):
    client, ref, _ = draft
    name = "Zhang Wei chest X-ray.png"
    assert upload(client, ref, png(), "../../static/" + name).status_code == 302
    att = stored_attachment()
    assert att.original_name == name, "the path is dropped from the display name"
    assert re.fullmatch(r"[0-9a-f]{32}\.png", att.stored_name)
    upload_dir = Path(app.config["UPLOAD_DIR"]).resolve()
    path = upload_dir / att.stored_name
    assert path.is_file()
    static = Path(app.static_folder).resolve()
    assert static not in path.resolve().parents, "uploads must not live under static/"
    assert upload_dir != static and static not in upload_dir.parents
    every_name = [p.name for p in upload_dir.rglob("*")] + [p.name for p in static.rglob("*")]
    assert not any("Zhang" in n or "X-ray" in n for n in every_name), "the original name reached the disk"
    assert not any(n.endswith(".part") for n in every_name)
    assert client.get(f"/static/{att.stored_name}").status_code == 404
    assert client.get(f"/static/../{Path(app.config['UPLOAD_DIR']).name}/{att.stored_name}").status_code == 404


def test_download_headers(app, draft):
    client, ref, _ = draft
    original = pdf(1)
    assert upload(client, ref, png(), "心电图 ecg.png").status_code == 302
    assert upload(client, ref, original, "labs.pdf").status_code == 302
    db.session.rollback()
    image, document = db.session.scalars(select(Attachment).order_by(Attachment.id)).all()

    r = client.get(f"/consults/{ref}/attachments/{image.id}")
    assert r.status_code == 200
    assert r.mimetype == "image/png"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    cache = r.headers["Cache-Control"]
    assert "private" in cache and "no-store" in cache and "public" not in cache
    assert r.headers["Content-Disposition"].startswith("inline")
    assert "filename*=UTF-8''" in r.headers["Content-Disposition"]
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.data == stored_bytes(app, image)

    r = client.get(f"/consults/{ref}/attachments/{document.id}?download=1")
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    assert r.headers["Content-Disposition"].startswith("attachment") and "labs.pdf" in r.headers["Content-Disposition"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in r.headers["Cache-Control"]
    assert r.data == original
