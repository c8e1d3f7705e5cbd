"""Platform tokens and the checks every Loopwright service applies to a caller.

``tokens``: hashed tokens with scopes and an author (``TokenStore.authenticate``);
``local``: the local credential file the tools on this machine share;
``origin``: the Host/Origin policy against DNS rebinding and cross-site requests.
See docs/security.md.
"""

from loopwright.auth.tokens import SCOPES, AuthError, Principal, TokenInfo, TokenStore

__all__ = ["SCOPES", "AuthError", "Principal", "TokenInfo", "TokenStore"]
