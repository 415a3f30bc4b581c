"""What a valid reply looks like, and how numbers are written to a device.

Replies are parsed strictly: a query that expects one number gets exactly one finite
number (``"80"``, ``" 80 "``, ``"+8.0E+01"``), never ``"80,80"``, ``"nan"``, ``"OK"`` or
``"80nm"``; a state word must be one of the device's words. A reply that is not valid
is refused with a :class:`ValueError` saying why; the driver turns it into a
:class:`~cryoopt.instruments.errors.GarbledReplyError` naming the command, so junk is
never returned as a value.

Numbers are written in full: :func:`format_number` gives the shortest text that reads
back as the same float (``80.1234567``, not ``%g``'s six digits ``80.1235``), and whole
numbers without decimals (``80``).

Example:
    >>> parse_number(" +8.0E+01 "), format_number(80.1234567), format_number(80.0)
    (80.0, '80.1234567', '80')
    >>> parse_number("80,80")
    Traceback (most recent call last):
    ...
    ValueError: expected one number, got '80,80'
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

__all__ = [
    "format_command",
    "format_number",
    "parse_error_reply",
    "parse_number",
    "parse_text",
    "parse_whole",
    "parse_word",
    "precise_format",
]

# IEEE 488.2 decimal numeric data (NR1/NR2/NR3): sign, digits, optional point, exponent
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# SYST:ERR? reply: <code>,"<message>" (quotes optional, message optional)
_ERROR = re.compile(r'([+-]?\d+)\s*(?:,\s*"?(.*?)"?)?')
# printf conversions: flags, width, precision, conversion letter
_CONVERSION = re.compile(r"%(?P<spec>[-+ #0]*(?:\d+|\*)?(?:\.(?:\d+|\*))?)(?P<conv>[diouxXeEfFgGcrsa%])")


def parse_number(text: str) -> float:
    """One finite decimal number, surrounding blanks allowed."""
    s = text.strip()
    if not _NUMBER.fullmatch(s):
        raise ValueError(f"expected one number, got {text!r}")
    value = float(s)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {text!r}")
    return value


def parse_whole(text: str) -> int:
    """One whole number (``"3"`` or ``"3.0"``; not ``"3.5"``)."""
    value = parse_number(text)
    if value != int(value):
        raise ValueError(f"expected a whole number, got {text!r}")
    return int(value)


def parse_word(text: str, words: Iterable[str]) -> str:
    """One of ``words`` (case-insensitive), returned in its canonical spelling."""
    s = text.strip().upper()
    for w in words:
        if w.upper() == s:
            return w
    raise ValueError(f"expected one of {', '.join(words)}, got {text!r}")


def parse_text(text: str) -> str:
    """A non-empty line of text (identification strings)."""
    s = text.strip()
    if not s:
        raise ValueError("expected text, got an empty line")
    return s


def parse_error_reply(text: str) -> tuple[int, str]:
    """``SYST:ERR?`` reply ``<code>,"<message>"`` -> ``(code, message)``."""
    m = _ERROR.fullmatch(text.strip())
    if m is None:
        raise ValueError(f'expected <code>,"<message>", got {text!r}')
    return int(m.group(1)), (m.group(2) or "").strip()


def format_number(value: float | int) -> str:
    """Shortest decimal text that reads back as ``value``; whole numbers without decimals."""
    x = float(value)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def precise_format(fmt: str) -> tuple[str, bool]:
    """Replace the bare ``%g``/``%G`` conversions of ``fmt`` by ``%s`` (for :func:`format_number`).

    Returns the new format and whether anything was replaced. Conversions with an explicit
    precision (``%.3f``) are left alone: a profile that writes them means that resolution.
    """
    changed = False

    def swap(m: re.Match[str]) -> str:
        nonlocal changed
        if m.group("conv") in "gG" and not m.group("spec"):
            changed = True
            return "%s"
        return m.group(0)

    return _CONVERSION.sub(swap, fmt), changed


def format_command(fmt: str, *args: object) -> str:
    """``fmt % args`` with every bare ``%g`` written by :func:`format_number`."""
    if not args:
        return fmt
    out: list[str] = []
    pos, i = 0, 0
    for m in _CONVERSION.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        if m.group("conv") == "%":
            out.append("%")
            continue
        if i >= len(args):
            raise TypeError(f"not enough arguments for command format {fmt!r}")
        arg = args[i]
        i += 1
        if m.group("conv") in "gG" and not m.group("spec"):
            out.append(format_number(arg))  # type: ignore[arg-type]
        else:
            out.append(("%" + m.group("spec") + m.group("conv")) % (arg,))
    if i != len(args):
        raise TypeError(f"too many arguments for command format {fmt!r}")
    out.append(fmt[pos:])
    return "".join(out)
