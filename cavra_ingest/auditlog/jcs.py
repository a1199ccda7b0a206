"""RFC 8785 (JCS) canonical JSON of a stored record: the bytes an audit-log leaf commits to."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import msgspec


def _refuse_float(_text: str) -> Any:
    raise ValueError("float")


# Records rarely hold floats (only inside context/metadata/labels); without them msgspec's sorted output is
# already JCS: same escapes (`\uXXXX` lowercase, short forms for \b \t \n \f \r), UTF-8 text, exact ints.
_NO_FLOATS = msgspec.json.Decoder(float_hook=_refuse_float)
_ANY = msgspec.json.Decoder()


def canonical(payload: bytes) -> bytes:
    """Return the JCS form of a JSON text."""
    try:
        value = _NO_FLOATS.decode(payload)
    except msgspec.ValidationError:
        return dumps(_ANY.decode(payload))
    out = msgspec.json.encode(value, order="sorted")
    # A 4-byte UTF-8 sequence is a character beyond the BMP, where code point order (msgspec's key sort)
    # and UTF-16 order (JCS's) can differ: take the slow path then.
    if not out.isascii() and max(out) >= 0xF0:
        return dumps(value)
    return out


def dumps(value: Any) -> bytes:
    """Serialize a decoded JSON value per RFC 8785."""
    return "".join(_parts(value)).encode()


def _parts(value: Any) -> Any:
    if isinstance(value, dict):
        yield "{"
        for n, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be"))):
            yield ("," if n else "") + msgspec.json.encode(key).decode() + ":"
            yield from _parts(value[key])
        yield "}"
    elif isinstance(value, list):
        yield "["
        for n, item in enumerate(value):
            if n:
                yield ","
            yield from _parts(item)
        yield "]"
    elif isinstance(value, float):
        yield number(value)
    else:
        # str, int (exact digits: beyond ±2^53 RFC 8785 would round through a double and so could hide an
        # edit; exact digits keep every edit visible and equal RFC 8785 within the safe range), bool, None.
        yield msgspec.json.encode(value).decode()


def number(x: float) -> str:
    """Format a double as ECMAScript's Number::toString does (RFC 8785 §3.2.2.3)."""
    if not math.isfinite(x):
        raise ValueError("NaN and Infinity have no JSON form")
    if x == 0:
        return "0"
    if x < 0:
        return "-" + number(-x)
    # repr is the shortest string that round-trips, as ECMAScript requires.
    sign, digit_tuple, exponent = Decimal(repr(x)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent = int(exponent) + len(digit_tuple) - len(digits)
    k = len(digits)
    n = exponent + k
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
