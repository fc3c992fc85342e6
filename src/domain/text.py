"""Text the domain stores: no control characters. (A NUL cannot even be stored in a PostgreSQL
`text` column: an event carrying one would stop every SQL view that copies the field.)"""

from __future__ import annotations

import unicodedata

from domain.errors import Invalid

_MULTILINE_ALLOWED = frozenset("\n\t")


def check_text(text: str, field: str, *, multiline: bool = False) -> str:
    """`text` itself, if it has no control characters (newlines and tabs allowed if `multiline`)."""
    for char in text:
        if unicodedata.category(char) == "Cc" and not (multiline and char in _MULTILINE_ALLOWED):
            what = "newlines, tabs and printable characters" if multiline else "printable characters"
            raise Invalid(f"{field} may contain only {what}", field=field)
    return text
