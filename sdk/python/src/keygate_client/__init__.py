"""Sign requests to keygate-protected APIs.

    import requests
    from keygate_client import KeygateAuth, raise_for_refusal

    auth = KeygateAuth("pk_...", "sk_...")
    answer = raise_for_refusal(requests.get("https://api.example.com/v1/whoami", auth=auth))

``KeygateHttpxAuth`` does the same for httpx (sync and async); ``sign()``
signs one request for any other client. See README.md.
"""
from typing import Any

from ._errors import KeygateError, raise_for_refusal
from ._signer import DEFAULT_MAX_BODY_BYTES, IDEMPOTENT_METHODS, NO_RETRIES, BodyTooLarge, RetryPolicy, Signer
from ._signing import KG1, RFC9421, Signed, new_nonce, sign, string_to_sign

__version__ = "0.1.0"

__all__ = [
    "KG1", "RFC9421", "Signed", "sign", "string_to_sign", "new_nonce",
    "Signer", "RetryPolicy", "NO_RETRIES", "IDEMPOTENT_METHODS", "DEFAULT_MAX_BODY_BYTES", "BodyTooLarge",
    "KeygateError", "raise_for_refusal",
    "KeygateAuth", "KeygateHttpxAuth",
]


def __getattr__(name: str) -> Any:
    # The adapters import their HTTP library only when asked for.
    if name == "KeygateAuth":
        from .requests_auth import KeygateAuth
        return KeygateAuth
    if name == "KeygateHttpxAuth":
        from .httpx_auth import KeygateHttpxAuth
        return KeygateHttpxAuth
    raise AttributeError(name)
