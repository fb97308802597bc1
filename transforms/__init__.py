"""Beam PTransforms and DoFns. Each wraps plain functions over numpy/Arrow that live beside it."""
