"""On-device benchmarking: bundle a run for a board, run it there without torch, merge the results.

Two sides, one package:

* host side (may use torch): ``bundle.make_bundle`` packs a run's deployable artifacts, a fixed
  test sample and the host's predictions on it into one tar with sha256 hashes;
  ``remote`` copies it to a board over ssh, runs the container, fetches and merges the results.
* board side (numpy + a runtime only): ``python -m pipeline.device run bundle.tar -o results.json``
  verifies the hashes, measures latency with the host benchmark's method and accuracy on the
  sample, and writes rows in the report's schema, tagged with the device that produced them.

Importing this package imports nothing heavy: the board has no torch, and tests check it.
"""

BUNDLE_FORMAT = 1  # bumped when the bundle layout changes; the runner refuses other versions
