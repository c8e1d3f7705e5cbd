"""The sidecar: turns submitted skill source into a registered version or a structured rejection.

Its pipeline (syntax, policy, manifest, capabilities, sandboxed tests, registration) is built on
``loopwright.sandbox.policy`` and ``loopwright.skills_registry``; see docs/architecture in
ARCHITECTURE.md. This source root exists so the namespace package layout is complete.
"""
