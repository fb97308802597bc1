"""Validation: every chunk checked row by row against its modality's contract; bad rows become
dead letters with a reason."""
