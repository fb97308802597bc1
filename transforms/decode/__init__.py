"""Decoders: one source file of one stream -> Chunks (Arrow record batches of samples) and
DeadLetters. ``base`` is what decoders share (int64 time check, allowed roots, record
accounting), one module per modality, ``stage`` the format table, ``DecodeRequest`` and the
Beam shells, ``segments`` the offsets that make a multi-file stream's files consecutive."""
