"""Clocks: applying a stream's clock model (``apply``), and estimating it when the clock cannot
be trusted: sync features (``features``), DTW engines (``dtw``), the fit (``fit``) and the Beam
stage (``sync``)."""
