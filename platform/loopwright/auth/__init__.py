"""Platform tokens and the checks every Loopwright service applies to a caller.

``tokens``: hashed tokens with scopes and an author (``TokenStore.authenticate``);
``local``: the local credential file the tools on this machine share;
``origin``: the Host/Origin policy against DNS rebinding and cross-site requests.
``scopes``: the scope and author names (no imports: the CLI reads them at start-up).
See docs/security.md.
"""
