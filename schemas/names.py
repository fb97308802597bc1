"""Names that become file or folder names: session and stream ids, run ids, consumer groups.

One rule for all of them, so none can climb out of a folder (``..``), name an absolute path
(``/etc``) or hide (``.x``): a letter or digit, then up to 63 letters, digits, ``_``, ``.``
or ``-``. ``.`` and ``..`` never match (the first character is a letter or digit).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from mmalign.schemas.errors import ManifestError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
RULE = "use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"


def is_name(value: object) -> bool:
    """True when ``value`` may be used as a file or folder name."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def _name(value: str) -> str:
    if not is_name(value):
        raise ValueError(f"{value!r} is not a valid name (it becomes a file or folder name); "
                         f"{RULE}")
    return value


# the pydantic field type of such names: manifest session and stream ids, calibration ids
Name = Annotated[str, AfterValidator(_name)]


def check_name(value: object, what: str) -> str:
    """``value`` when it is a valid name, else ``ManifestError`` with one sentence naming
    ``what`` (e.g. ``"--run-id"``) and the fix. Call it before anything touches the disk."""
    if is_name(value):
        return value  # type: ignore[return-value]
    shown = repr(value) if isinstance(value, str) else type(value).__name__
    raise ManifestError(f"{what} {shown} is not a valid name (it becomes a file or folder "
                        f"name); {RULE}")
