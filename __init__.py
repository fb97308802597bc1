"""mmalign: a streaming multimodal ingestion and alignment pipeline on Apache Beam.

The repository's top-level folders (schemas, deadletter, transforms, encoders, pipelines,
infra) are installed as subpackages of this one (pyproject.toml's package-dir maps
``mmalign`` to the repository root), so ``pip install mmalign`` adds no top-level package
besides ``mmalign``.
"""
