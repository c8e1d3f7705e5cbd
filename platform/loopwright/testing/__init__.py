"""Test doubles shipped with Loopwright, for its tests and benchmarks (and yours).

Nothing under ``loopwright`` imports this package (``tests/test_layout.py`` checks it): a test
double in the product path would be a way for a test-only behaviour to reach production.
"""
