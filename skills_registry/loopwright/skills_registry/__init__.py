"""The versioned skills registry: immutable content-hashed versions and an active pointer.

Until it lands, ``loopwright.runner.sources`` stores skill sources by content hash and pins
every run to the version it started with. This source root exists so the namespace package
layout is complete.
"""
