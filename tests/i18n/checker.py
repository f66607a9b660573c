"""What a reader sees on a page, and the words of the other language left in it: the checker of
tests/i18n/test_pages.py, also used by the error tests and the Chinese browser journey."""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.parser import HTMLParser

# --- what a reader sees -----------------------------------------------------------------------------

# Tags that do not end a run of text: a sentence may carry a link, emphasis or a number inside it.
INLINE = {"a", "abbr", "b", "bdi", "cite", "code", "data", "em", "i", "kbd", "mark", "q", "s", "small",
          "span", "strong", "sub", "sup", "time", "u", "var", "wbr"}
HIDDEN = {"script", "style", "template", "noscript"}
SHOWN_ATTRS = ("placeholder", "aria-label", "title", "alt")


class _VisibleText(HTMLParser):
    """Collects the chunks a reader sees: text between block boundaries, attribute texts, option texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._buf: list[str] = []
        self._hidden = 0

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        if text:
            self.chunks.append(text)
        self._buf = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in HIDDEN:
            self._hidden += 1
            return
        if tag not in INLINE:
            self._flush()
        a = dict(attrs)
        for name in SHOWN_ATTRS:
            if a.get(name):
                self.chunks.append(" ".join(a[name].split()))
        if tag == "input" and a.get("type") in ("submit", "button", "reset") and a.get("value"):
            self.chunks.append(a["value"])

    def handle_startendtag(self, tag: str, attrs) -> None:
        self.handle_starttag(tag, attrs)
        if tag in HIDDEN:
            self._hidden -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in HIDDEN:
            self._hidden = max(0, self._hidden - 1)
            return
        if tag not in INLINE:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def visible_chunks(html: str) -> list[str]:
    """The texts of a page a reader sees (scripts and styles removed, tags stripped, block by block),
    plus its placeholder/aria-label/title/alt attributes, submit buttons' values and option texts."""
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    return parser.chunks


# Words that are the same in every language: the product's name, units, codes, protocols, formats.
ALLOWED_WORDS = {
    "huizhen", "mmhg", "spo", "spo₂", "ecg", "ekg", "ice", "turn", "stun", "webrtc", "ical", "ics", "csv",
    "pdf", "png", "jpeg", "jpg", "gif", "heic", "dicom", "kg", "cm", "bpm", "min", "utc", "gmt", "ip", "id",
    "url", "english", "ok", "sha", "hmac", "api", "json", "http", "https",
}
ALLOWED_PATTERNS = [
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),  # email addresses
    re.compile(r"https?://\S+"),  # links (calendar feed, reset link)
    re.compile(r"\b[\w-]+\.(?:png|jpe?g|pdf|gif|ics|csv)\b", re.I),  # file names
]
WORD = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*")
EDGE = "\"'“”‘’«»()[]{}<>,.;:!?…*•·|"
CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]+")
ALLOWED_CJK = {"中文"}  # the language switch names Chinese in Chinese on every page
# The product's bilingual brand: the title's "Huizhen 会诊" and the header's mark "会" before the name.
BRAND = ("Huizhen 会诊", "会Huizhen")


def english_runs(text: str, allowed: Iterable[str] = ()) -> list[str]:
    """Runs of three or more English words in a text (allowlisted words and data do not count)."""
    for literal in sorted(allowed, key=len, reverse=True):
        if literal:
            text = text.replace(literal, " \x00 ")
    for pattern in ALLOWED_PATTERNS:
        text = pattern.sub(" \x00 ", text)
    runs: list[str] = []
    run: list[str] = []  # the words' cores (to count them)
    shown: list[str] = []  # the words as written, punctuation kept (to find the msgid)

    def end() -> None:
        if len([w for w in run if w.lower() not in ALLOWED_WORDS]) >= 3:
            runs.append(" ".join(shown).strip(" ,;:·•|"))
        run.clear()
        shown.clear()

    for token in text.split():
        core = token.strip(EDGE)
        if core and WORD.fullmatch(core):
            run.append(core)
            shown.append(token)
        elif not core:
            if run:
                shown.append(token)  # lone punctuation ("-", "·") between words
        else:
            end()
    end()
    return runs


def chinese_runs(text: str, allowed: Iterable[str] = ()) -> list[str]:
    """Chinese characters in a text (runs of them), outside the allowlist."""
    for literal in sorted(allowed, key=len, reverse=True):
        if literal:
            text = text.replace(literal, " ")
    return [m for m in CJK.findall(text) if m not in ALLOWED_CJK and m.strip("\u3000")]


def page_english(html: str, allowed: Iterable[str] = ()) -> list[str]:
    """Every run of 3+ English words a reader sees on the page."""
    allowed = list(allowed)
    return [run for chunk in visible_chunks(html) for run in english_runs(chunk, allowed)]


def page_chinese(html: str, allowed: Iterable[str] = ()) -> list[str]:
    """Every visible chunk of the page that holds Chinese outside the allowlist (the whole chunk, for context)."""
    allowed = [*BRAND, *allowed]
    return [chunk for chunk in visible_chunks(html) if chinese_runs(chunk, allowed)]
