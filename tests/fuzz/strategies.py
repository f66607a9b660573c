"""Hypothesis strategies for hostile input: odd text, huge numbers, wrong types, broken encodings."""

from __future__ import annotations

import math
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Every code point, lone surrogates included (Hypothesis leaves category Cs out by default).
ANY_CHAR = st.characters(codec=None, categories=None, exclude_categories=())
NASTY_STRINGS = [
    "", " ", "\x00", "a\x00b", "\ud800", "\udfff", "x\ud83d", "\ufeff", "\u202e", "\u0000\u0000", "\r\n",
    "null", "None", "true", "0", "-1", "1e400", "NaN", "-Infinity", "Infinity", "sNaN", "0x7fffffff",
    "99999999999999999999", "-99999999999999999999", "9" * 400, "٣", "１２", " 5 ", "1_000", "1.5", "+7",
    "'; DROP TABLE users; --", "<script>alert(1)</script>", "{{7*7}}", "%00", "../../etc/passwd",
    "/\\evil.example", "//evil.example", "v=0\r\n", "candidate:", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "多语言", "x" * 5000,
]
CRITICAL = ["\x00", "a\x00b", "\ud800", "x\udfff", 2**31, 2**63, 2**64, -1, math.nan, math.inf, True,
            {"$": ["\x00"]}, ["\ud800"], "9" * 30]
NASTY_INTS = [0, -1, 1, 2**31 - 1, 2**31, -(2**31) - 1, 2**53, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**20]

nasty_text = st.one_of(st.sampled_from(NASTY_STRINGS), st.text(ANY_CHAR, max_size=40))
nasty_int = st.one_of(st.sampled_from(NASTY_INTS), st.integers(min_value=-(2**70), max_value=2**70))
nasty_float = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]), st.floats())
scalar = st.one_of(st.none(), st.booleans(), nasty_int, nasty_float, nasty_text)
json_like: st.SearchStrategy[Any] = st.recursive(
    scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=4)),
    max_leaves=8,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a well-formed value (to reach deep into the handler), sometimes anything at all."""
    return st.one_of(valid, valid, json_like)


def payloads(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A socket payload: the event's fields (each maybe malformed, maybe missing), sometimes extra
    keys, and now and then not an object at all."""
    obj = st.fixed_dictionaries({}, optional={key: maybe(value) for key, value in fields.items()})
    with_extra = st.tuples(obj, st.dictionaries(nasty_text, json_like, max_size=2)).map(
        lambda pair: {**pair[1], **pair[0]})
    return st.one_of(obj, obj, obj, with_extra, json_like)


# --- form values: bytes, because browsers (and attackers) send any bytes, not only UTF-8 -------

def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


form_text = st.one_of(nasty_text.map(_encode), st.binary(max_size=40))
form_number = st.one_of(nasty_int.map(lambda n: str(n).encode()), nasty_float.map(lambda f: repr(f).encode()),
                        form_text)


def form_fields(valid: dict[str, Any], numbers: tuple[str, ...] = (),
                extra: tuple[str, ...] = ()) -> st.SearchStrategy[list[tuple[str, bytes]]]:
    """A form body as (name, value) pairs: the valid form with some fields replaced by junk, some
    dropped or repeated, and now and then unknown fields."""

    def value_for(name: str) -> st.SearchStrategy[bytes]:
        junk = form_number if name in numbers else form_text
        good = valid.get(name, "")
        goods = [_encode(v) for v in good] if isinstance(good, list) else [_encode(str(good))]
        return st.one_of(st.sampled_from(goods), junk)

    names = list(valid) + list(extra)

    @st.composite
    def build(draw) -> list[tuple[str, bytes]]:
        pairs: list[tuple[str, bytes]] = []
        for name in names:
            mode = draw(st.sampled_from(["valid", "valid", "junk", "drop", "twice"]))
            good = valid.get(name, "")
            if mode == "valid" and name in valid:
                pairs += [(name, _encode(v)) for v in (good if isinstance(good, list) else [str(good)])]
            elif mode == "drop":
                continue
            else:
                pairs += [(name, draw(value_for(name))) for _ in range(2 if mode == "twice" else 1)]
        for _ in range(draw(st.integers(0, 1))):
            pairs.append((draw(form_text).decode("latin-1"), draw(form_text)))
        return pairs

    return build()


EXAMPLES = int(os.environ.get("HUIZHEN_FUZZ_EXAMPLES", "25"))  # per target; raise it for a deeper local run
FUZZ = settings(
    max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=True,
    # One world per target, shared by its examples (each example checks what it changed).
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example],
)
