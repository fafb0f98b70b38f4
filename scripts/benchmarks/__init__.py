"""The figures of ``scripts/benchmark.py``, one module each; ``common`` holds what they share."""
