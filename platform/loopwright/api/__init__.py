"""The HTTP API (``/api/v1``): one service layer over runs, skills, events and history.

``create_app(runtime)`` builds the FastAPI application; ``serve`` runs it (``loopwright serve``).
Every route needs a platform token (``loopwright.auth``) or a session cookie made from one,
except ``/healthz`` and the one-time login URL.
"""
