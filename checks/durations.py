"""Go-style duration strings, as Consul uses them for every interval, timeout and TTL.

Pure and stdlib-only: the agent config loader and the checks core both parse durations, and
the HTTP layer formats them back the way Go's ``time.Duration.String`` does.

Rules (those of Go's ``time.ParseDuration``):

* a duration is an optional sign, then one or more ``<number><unit>`` terms: ``"10s"``,
  ``"1m30s"``, ``"1.5h"``, ``"-2ms"``; units are ``ns``, ``us`` (or ``µs``), ``ms``, ``s``,
  ``m``, ``h``; a bare ``"0"`` is the only number allowed without a unit;
* fractions below a nanosecond are truncated, as Go does;
* a number that is not a string (an ``int`` or ``float``) counts NANOSECONDS, which is what
  Consul's HTTP API does with a JSON number in a duration field.
"""

from __future__ import annotations

import re

NANOSECOND = 1
MICROSECOND = 1000 * NANOSECOND
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS: dict[str, int] = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # micro sign
    "\u03bcs": MICROSECOND,  # Greek small letter mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
# ASCII digits only: \d would also accept other scripts' digits. "ms" is tried before "m".
_TERM = r"(?:([0-9]+)(?:\.([0-9]*))?|\.([0-9]+))(ns|us|\u00b5s|\u03bcs|ms|s|m|h)"
_TERM_RE = re.compile(_TERM)
_WHOLE_RE = re.compile(rf"[+-]?(?:{_TERM})+")

_HINT = 'expected a number and a unit (ns, us, ms, s, m, h), e.g. "10s", "100ms", "1m30s"'


MAX_NS = 2**63 - 1  # Go's time.Duration is an int64 of nanoseconds (about 292 years)


def parse_duration_ns(value: str | int | float) -> int:
    """A duration in whole nanoseconds; see the module docstring for the accepted forms.

    Raises ValueError naming the bad value and the expected form, or saying it is out of
    range: beyond Go's int64 nanoseconds (where Go's ParseDuration says "overflow" too).
    """
    ns = _parse_ns(value)
    if not -MAX_NS <= ns <= MAX_NS:
        raise ValueError(f"invalid duration {str(value)[:40]!r}: out of range (at most about 292 years)")
    return ns


def _parse_ns(value: str | int | float) -> int:
    if isinstance(value, bool):  # bool is an int subclass; True is no duration
        raise ValueError(f"invalid duration {value!r}: {_HINT}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"invalid duration {value!r}: not a finite number")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: expected a string such as \"10s\"")
    text = value
    sign = 1
    body = text
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise ValueError(f"invalid duration {value!r}: empty")
    if _WHOLE_RE.fullmatch(text) is None:
        if re.fullmatch(r"[0-9.]+", body):
            raise ValueError(f"invalid duration {value!r}: missing unit; {_HINT}")
        raise ValueError(f"invalid duration {value!r}: {_HINT}")
    total = 0
    for match in _TERM_RE.finditer(body):
        whole, frac, bare_frac, unit = match.groups()
        scale = _UNITS[unit]
        digits = frac if whole is not None else bare_frac
        total += int(whole or "0") * scale
        if digits:
            total += int(digits) * scale // 10 ** len(digits)
    return sign * total


def parse_duration(value: str | int | float) -> float:
    """A duration in seconds (float): ``parse_duration("1m30s") == 90.0``.

    Strings follow Go's ``time.ParseDuration``; numbers are nanoseconds (Consul's API rule),
    so ``parse_duration(1_500_000_000) == 1.5``. Raises ValueError otherwise.
    """
    return parse_duration_ns(value) / SECOND


def format_duration_ns(ns: int) -> str:
    """Go's ``time.Duration.String``: ``"1h2m3.5s"``, ``"1.5ms"``, ``"0s"``.

    One difference: microseconds are written ``us`` (ASCII), where Go writes ``µs``.

    ``parse_duration_ns(format_duration_ns(n)) == n`` for every integer n.
    """
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    n = abs(ns)
    if n < SECOND:
        for unit, scale in (("ms", MILLISECOND), ("us", MICROSECOND), ("ns", NANOSECOND)):
            if n >= scale:
                return sign + _with_fraction(n, scale) + unit
    hours, rest = divmod(n, HOUR)
    minutes, rest = divmod(rest, MINUTE)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + _with_fraction(rest, SECOND) + "s"


def format_duration(seconds: float) -> str:
    """``format_duration_ns`` for a number of seconds, rounded to the nearest nanosecond."""
    return format_duration_ns(round(seconds * SECOND))


def _with_fraction(n: int, scale: int) -> str:
    whole, frac = divmod(n, scale)
    if not frac:
        return str(whole)
    width = len(str(scale)) - 1
    return f"{whole}.{frac:0{width}d}".rstrip("0")
