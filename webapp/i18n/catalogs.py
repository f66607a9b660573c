"""The translation catalogs: extract, update, compile and check them (``make i18n-update``,
``make translations``; tests/i18n/test_catalogs.py runs ``problems``).

Two domains: ``messages`` (Python and templates, babel.cfg) and ``js`` (the browser scripts'
``t("...")`` calls, babel-js.cfg). English is the source language: its catalog lists every msgid
with an empty translation (the msgid is shown); zh_CN must translate every one.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from io import BytesIO
from pathlib import Path

from babel import Locale
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[2]
TRANSLATIONS = ROOT / "webapp" / "translations"
LOCALES = ("zh_CN", "en")
# Besides gettext's own: lazy strings, and the domain errors whose first argument is a message.
ERROR_CLASSES = ("DomainError", "ValidationFailed", "NotFound", "Forbidden", "Conflict", "InvalidTransition",
                 "UnsupportedFile", "FileTooLarge", "RateLimited", "TooManyMessages", "RoomNotOpen")
KEYWORDS = {"messages": {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None, "lazy_ngettext": (1, 2),
                         **{name: None for name in ERROR_CLASSES}},
            "js": {"t": None}}
CONFIGS = {"messages": "babel.cfg", "js": "babel-js.cfg"}


def extract(domain: str, skipped: list[str] | None = None) -> Catalog:
    """Every message of the domain found in the code now; a message composed with an f-string
    (which no catalog can hold) is reported into skipped."""
    with open(ROOT / CONFIGS[domain], encoding="utf-8") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    catalog = Catalog(project="Huizhen", charset="utf-8")
    warnings = io.StringIO()
    with contextlib.redirect_stderr(warnings):
        for _file, _line, message, comments, context in extract_from_dir(
                str(ROOT), method_map, options_map, keywords=KEYWORDS[domain], comment_tags=("Translators:",),
                strip_comment_tags=True):
            catalog.add(message, None, auto_comments=comments, context=context,
                        flags=("python-format",) if domain == "js" and "%(" in str(message) else ())
    for line in warnings.getvalue().splitlines():
        if skipped is not None and "f-string" in line:
            skipped.append(line.replace(str(ROOT) + "/", ""))
        elif skipped is None and line.strip():
            print(line, file=sys.stderr)
    return catalog


def po_path(locale: str, domain: str) -> Path:
    """Where a locale's catalog of a domain lives."""
    return TRANSLATIONS / locale / "LC_MESSAGES" / f"{domain}.po"


def read(locale: str, domain: str) -> Catalog:
    """A locale's catalog (an empty one if it does not exist yet)."""
    path = po_path(locale, domain)
    if not path.exists():
        return Catalog(locale=locale, domain=domain, project="Huizhen", charset="utf-8")
    with open(path, "rb") as f:
        return read_po(f, locale=locale, domain=domain)


def _write(catalog: Catalog, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = BytesIO()
    write_po(out, catalog, omit_header=False, no_location=True, sort_output=True, width=100,
             ignore_obsolete=True, include_previous=False)
    path.write_bytes(out.getvalue())


def update() -> None:
    """Bring every locale's catalog in line with the code: new msgids added, gone ones dropped."""
    for domain in CONFIGS:
        template = extract(domain)
        for locale in LOCALES:
            catalog = read(locale, domain)
            catalog.update(template, no_fuzzy_matching=True)
            catalog.obsolete.clear()
            _write(catalog, po_path(locale, domain))


FRAGMENTS = TRANSLATIONS / "fragments"


def absorb() -> int:
    """Fill the zh_CN catalogs from the JSON fragments under translations/fragments (each a
    {"messages": {msgid: text}, "js": {msgid: text}} written beside a change); returns how many
    translations were taken. The fragments are then merged into the .po files and can go."""
    import json

    taken = 0
    fragments = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(FRAGMENTS.glob("*.json"))]
    for domain in CONFIGS:
        given: dict[str, str] = {}
        for fragment in fragments:
            given.update(fragment.get(domain, {}))
        catalog = read("zh_CN", domain)
        for message in catalog:
            if not message.id:
                continue
            ident = message.id if isinstance(message.id, str) else message.id[0]
            text = given.get(ident)
            if not text:
                continue
            message.string = (text,) if isinstance(message.id, (list, tuple)) else text
            message.flags.discard("fuzzy")
            taken += 1
        _write(catalog, po_path("zh_CN", domain))
    return taken


def mo_path(locale: str, domain: str) -> Path:
    """Where the compiled catalog goes: under the name Babel gives the locale ("zh_CN" parses as
    zh_Hans_CN, and gettext looks for that directory, then "zh", never "zh_CN")."""
    return TRANSLATIONS / str(Locale.parse(locale)) / "LC_MESSAGES" / f"{domain}.mo"


def compile_all() -> None:
    """Build the .mo files from the .po files (never edited by hand)."""
    for domain in CONFIGS:
        for locale in LOCALES:
            catalog = read(locale, domain)
            path = mo_path(locale, domain)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                write_mo(f, catalog, use_fuzzy=False)


def _ids(catalog: Catalog) -> set[str]:
    return {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}


def problems() -> list[str]:
    """What is wrong with the catalogs against the code: missing, stale, untranslated, fuzzy, or a
    translation whose %(name)s placeholders differ from the msgid's."""
    found: list[str] = []
    for domain in CONFIGS:
        skipped: list[str] = []
        wanted = _ids(extract(domain, skipped))
        found += [f"{domain}: {line} (use %(name)s placeholders and pass the values as parameters)"
                  for line in skipped]
        for locale in LOCALES:
            catalog = read(locale, domain)
            have = _ids(catalog)
            found += [f"{locale}/{domain}: not in the catalog: {m!r}" for m in sorted(wanted - have)]
            found += [f"{locale}/{domain}: no longer in the code: {m!r}" for m in sorted(have - wanted)]
            if locale == "en":
                continue
            for message in catalog:
                if not message.id:
                    continue
                ident = message.id if isinstance(message.id, str) else message.id[0]
                texts = message.string if isinstance(message.string, (list, tuple)) else [message.string]
                if not all(texts):
                    found.append(f"{locale}/{domain}: untranslated: {ident!r}")
                elif message.fuzzy:
                    found.append(f"{locale}/{domain}: fuzzy: {ident!r}")
                else:
                    errors = list(message.check(catalog)) if domain == "messages" else []
                    found += [f"{locale}/{domain}: {ident!r}: {e}" for e in errors]
                    found += _placeholder_problems(locale, domain, ident, texts)
    return found


PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _placeholder_problems(locale: str, domain: str, ident: str, texts: list[str]) -> list[str]:
    wanted = set(PLACEHOLDER.findall(ident))
    return [f"{locale}/{domain}: {ident!r}: placeholders {sorted(set(PLACEHOLDER.findall(t)))} "
            f"differ from {sorted(wanted)}" for t in texts if set(PLACEHOLDER.findall(t)) != wanted]


def main(argv: list[str]) -> int:
    """python -m webapp.i18n.catalogs update|absorb|compile|check"""
    command = argv[1] if len(argv) > 1 else "check"
    if command == "update":
        update()
    elif command == "compile":
        compile_all()
    elif command == "absorb":
        update()
        print(f"{absorb()} translation(s) taken from {FRAGMENTS.relative_to(ROOT)}")
    elif command == "check":
        listed = problems()
        for line in listed:
            print(line)
        print(f"{len(listed)} problem(s)")
        return 1 if listed else 0
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
