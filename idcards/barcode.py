"""PDF-417 symbols (ISO/IEC 15438) for a card's barcode text, drawn at a printable size.

The encoder is pdf417gen. Sizes follow what zxing-cpp 3.1 was measured to read: modules
printed at least ~0.34 mm wide (OLV prints 0.38 mm), rows three modules high, and error
correction level 5 (64 codewords, enough to read through a crease or a glare spot).
"""

from __future__ import annotations

import math
import operator
from functools import cache

from pdf417gen.compaction import compact
from pdf417gen.data import ERROR_CORRECTION_FACTORS
from pdf417gen.encoding import encode_rows, get_padding, validate_barcode_size
from PIL import Image

MODULE_MM = 0.38
ROW_RATIO = 3
SECURITY_LEVEL = 5
COLUMNS = 10
QUIET_MODULES = 2  # PDF-417 needs a quiet zone of 2 modules on each side


MAX_CODEWORDS = 928


def codes(text: str) -> list[list[int]]:
    """The symbol's codeword rows (start and stop patterns included).

    pdf417gen's own ``encode`` with a faster Reed-Solomon step (:func:`_error_correction`):
    its textbook loop takes ~20 ms per card at level 5, a third of a minute per 1,000 cards.
    """
    data = list(compact(text.encode("ascii")))
    ec_count = 2 ** (SECURITY_LEVEL + 1)
    padding = get_padding(len(data), ec_count, COLUMNS)
    length = len(data) + len(padding) + 1
    validate_barcode_size(length, math.ceil((length + ec_count) / COLUMNS))
    words = [length, *data, *padding]
    words += _error_correction(words)
    rows = [words[i : i + COLUMNS] for i in range(0, len(words), COLUMNS)]
    return list(encode_rows(rows, COLUMNS, SECURITY_LEVEL))


@cache
def _impulse_responses() -> tuple[tuple[int, ...], ...]:
    """The encoder's register after a codeword 1 followed by j zeros, for every j.

    The PDF-417 Reed-Solomon encoder (ISO/IEC 15438 Annex F) is linear over GF(929), so its
    result for any message is the sum of these responses weighted by the message's codewords.
    """
    factors = ERROR_CORRECTION_FACTORS[SECURITY_LEVEL]
    count = len(factors)
    state, responses = [0] * count, []
    for word in [1] + [0] * (MAX_CODEWORDS - 1):
        temp = (word + state[-1]) % 929
        state = [((state[x - 1] if x else 0) - temp * factors[x]) % 929 for x in range(count)]
        responses.append(tuple(state))
    return tuple(responses)


@cache
def _columns(length: int) -> tuple[tuple[int, ...], ...]:
    """For a message of ``length`` codewords: per EC codeword, the weight of each message word."""
    responses = _impulse_responses()
    count = len(responses[0])
    return tuple(
        tuple(responses[length - 1 - i][count - 1 - k] for i in range(length)) for k in range(count)
    )


def _error_correction(words: list[int]) -> list[int]:
    return [(-sum(map(operator.mul, words, column))) % 929 for column in _columns(len(words))]


def size_modules(rows: list[list[int]]) -> tuple[int, int]:
    """Width in modules and height in rows."""
    return len(rows[0]) * 17 + 1, len(rows)


def size_mm(rows: list[list[int]]) -> tuple[float, float]:
    width, height = size_modules(rows)
    return width * MODULE_MM, height * ROW_RATIO * MODULE_MM


def bitmap(rows: list[list[int]]) -> Image.Image:
    """One pixel per module and per row (8-bit grey): a printer scales it up without blur."""
    width, height = size_modules(rows)
    data = b"".join(_pixels(value) for row in rows for value in row)
    return Image.frombytes("L", (width, height), data)


@cache
def _pixels(value: int) -> bytes:
    return bytes(0 if bit == "1" else 255 for bit in format(value, "b"))


def render(text: str, pixels_per_module: int = 3) -> Image.Image:
    """The symbol as an image with its quiet zone (for tests, pages and the demo)."""
    rows = codes(text)
    image = bitmap(rows)
    width, height = image.size
    scaled = image.resize(
        (width * pixels_per_module, height * pixels_per_module * ROW_RATIO),
        Image.Resampling.NEAREST,
    )
    margin = QUIET_MODULES * pixels_per_module * 2
    framed = Image.new("L", (scaled.width + 2 * margin, scaled.height + 2 * margin), 255)
    framed.paste(scaled, (margin, margin))
    return framed
