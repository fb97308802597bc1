"""The test suite (unit/, integration/, bad_inputs/) and its shared helpers."""
