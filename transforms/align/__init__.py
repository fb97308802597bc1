"""Alignment: time buckets (``buckets``), join policies (``policies``), approximate-time sets
(``approx_sets``) and the per-bucket join and its Beam stage (``join``)."""
