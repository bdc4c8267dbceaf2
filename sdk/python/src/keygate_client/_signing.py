"""The signature schemes: pure functions, no I/O."""
import base64
import hashlib
import hmac
import secrets
from typing import Dict, NamedTuple, Optional, Union

KG1 = "KG1-HMAC-SHA256"
RFC9421 = "rfc9421"

Body = Union[bytes, bytearray, memoryview, str, None]


class Signed(NamedTuple):
    """The headers to add to the request, and what was signed."""

    headers: Dict[str, str]
    string_to_sign: str


def body_bytes(body: Body) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


def string_to_sign(key_id: str, timestamp: int, nonce: str, method: str, target: str, body: Body = b"") -> str:
    """KG1's seven lines (CONTRACT section 2)."""
    return "\n".join([
        KG1,
        key_id,
        str(timestamp),
        nonce,
        method.upper(),
        target,
        hashlib.sha256(body_bytes(body)).hexdigest(),
    ])


def new_nonce() -> str:
    """16 random bytes, hex: fresh for every request, retries included."""
    return secrets.token_hex(16)


def sign(
    key_id: str,
    secret: str,
    method: str,
    target: str,
    body: Body = b"",
    *,
    timestamp: int,
    nonce: Optional[str] = None,
    scheme: str = KG1,
) -> Signed:
    """Signs one request.

    target: the path and query exactly as they go on the request line
    (``/v1/orders?id=7&q=a%20b``), not decoded, not re-ordered.
    body: the exact bytes sent (a str is taken as UTF-8).
    """
    nonce = nonce or new_nonce()
    if scheme == KG1:
        text = string_to_sign(key_id, timestamp, nonce, method, target, body)
        signature = _hmac(secret, text).hex()
        header = f"{KG1} KeyId={key_id}, Timestamp={timestamp}, Nonce={nonce}, Signature={signature}"
        return Signed({"Authorization": header}, text)
    if scheme == RFC9421:
        return _sign_rfc9421(key_id, secret, method, target, body_bytes(body), timestamp, nonce)
    raise ValueError(f"unknown scheme {scheme!r}: use {KG1!r} or {RFC9421!r}")


def _hmac(secret: str, text: str) -> bytes:
    # The HMAC key is the whole secret string's UTF-8 bytes, prefix included.
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).digest()


def _sign_rfc9421(key_id, secret, method, target, body, timestamp, nonce) -> Signed:
    """RFC 9421 with alg hmac-sha256, covering the method, the request
    target as sent and, when there is a body, its RFC 9530 Content-Digest."""
    headers = {}
    components = ['"@method"', '"@request-target"']
    lines = [f'"@method": {method.upper()}', f'"@request-target": {target}']
    if body:
        digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
        headers["Content-Digest"] = digest
        components.append('"content-digest"')
        lines.append(f'"content-digest": {digest}')
    params = f'({" ".join(components)});created={timestamp};keyid="{key_id}";nonce="{nonce}";alg="hmac-sha256"'
    lines.append(f'"@signature-params": {params}')
    base = "\n".join(lines)
    headers["Signature-Input"] = f"sig1={params}"
    headers["Signature"] = "sig1=:" + base64.b64encode(_hmac(secret, base)).decode() + ":"
    return Signed(headers, base)
