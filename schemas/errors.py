"""The error for input a person wrote: a manifest, a calibration, a config or a name.

``ManifestError`` carries one sentence naming the file, the field and the fix; the command
lines turn it into exit code 2. It lives here, below every module that raises it
(schemas/names.py, schemas/manifest.py, ...), so none of them imports another to raise it.
"""

from __future__ import annotations


class ManifestError(ValueError):
    """A manifest, calibration or config that cannot be used; the message says how to fix it."""
