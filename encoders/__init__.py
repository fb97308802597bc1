"""Torch encoders per modality, their RunInference model handlers, fusion and the feature store.

Modules: ``device`` (CUDA/precision), ``video``/``audio``/``text``/``sensor`` (preprocessing +
default encoders), ``registry`` (config -> encoder + model id), ``handlers`` (RunInference,
``EncodeModality``), ``fusion`` (fused vectors, the Parquet schema), ``feature_store`` (Feast).
"""
