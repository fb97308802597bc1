"""Spatial registration: camera <-> camera homographies from images (``registration``),
sensor -> camera projection (``projection``) and the post-align Beam stage (``stage``)."""
