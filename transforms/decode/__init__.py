"""Decoders: one source file of one stream -> Chunks (Arrow record batches of samples) and
DeadLetters. ``base`` is what decoders share, one module per modality, ``stage`` the format
table and the Beam shells."""
