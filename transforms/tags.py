"""The output tags every stage uses: its main output and its dead letters.

A stage is ``ParDo(fn).with_outputs(DEAD, main=MAIN)``; callers read ``out[MAIN]`` and
``out[DEAD]`` (or ``out.main`` / ``out.dead``).
"""

MAIN = "main"
DEAD = "dead"
