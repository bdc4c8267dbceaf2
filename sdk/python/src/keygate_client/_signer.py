"""Credentials, the corrected clock and the retry rules, shared by the
requests and httpx adapters."""
import json
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ._errors import parse_retry_after
from ._signing import KG1, Body, Signed, sign

# RFC 9110 section 9.2.2: repeating these has the effect of sending once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


@dataclass
class RetryPolicy:
    """When a refused request is signed again and re-sent.

    Only 503 (``unavailable``) and 429 (``rate_limited``) are retried, after
    their ``Retry-After`` (or an exponential delay from ``base_delay`` when
    there is none), with up to 20 % jitter added. A wait longer than
    ``max_wait`` is not waited: the answer is returned. Methods that are not
    idempotent (POST, PATCH) are retried only with ``retry_non_idempotent``:
    in gateway mode a 503 may come from the upstream after it acted.
    ``nonce_reused`` and signature errors are never retried.
    """

    max_retries: int = 2
    max_wait: float = 10.0
    base_delay: float = 0.25
    retry_non_idempotent: bool = False


NO_RETRIES = RetryPolicy(max_retries=0)


class Attempts:
    """What one call has used of its retries."""

    def __init__(self) -> None:
        self.retries = 0
        self.skew_corrected = False


class Signer:
    """Signs requests for one key, and decides what to do with a refusal.

    The clock offset learnt from a ``timestamp_out_of_range`` refusal's
    ``server_time`` is kept (``clock_offset``, seconds to add to the local
    clock) and used for every later request; alert on it if it grows.
    """

    def __init__(
        self,
        key_id: str,
        secret: str,
        *,
        scheme: str = KG1,
        retry: Optional[RetryPolicy] = None,
        correct_clock_skew: bool = True,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not key_id or not secret:
            raise ValueError("key_id and secret are required")
        self.key_id = key_id
        self._secret = secret
        self.scheme = scheme
        self.retry = retry if retry is not None else RetryPolicy()
        self.correct_clock_skew = correct_clock_skew
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        self._offset = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the secret
        return f"Signer(key_id={self.key_id!r}, scheme={self.scheme!r})"

    @property
    def clock_offset(self) -> float:
        return self._offset

    def now(self) -> int:
        return int(self._clock() + self._offset)

    def sign(self, method: str, target: str, body: Body) -> Signed:
        return sign(self.key_id, self._secret, method, target, body, timestamp=self.now(), scheme=self.scheme)

    def next_step(self, attempts: Attempts, method: str, status: int, headers: Any, body: bytes) -> Optional[float]:
        """Seconds to wait before signing again and re-sending, or None to
        return this answer to the caller."""
        if status not in (401, 429, 503):
            return None
        code = _error_code(body)
        if status == 401:
            if code != "timestamp_out_of_range" or not self.correct_clock_skew or attempts.skew_corrected:
                return None
            try:
                server_time = int(json.loads(body)["error"]["server_time"])
            except (ValueError, KeyError, TypeError):
                return None
            # Refused before anything was recorded or forwarded: safe for any method.
            with self._lock:
                self._offset = server_time + 0.5 - self._clock()
            attempts.skew_corrected = True
            return 0.0
        if code is not None and code not in ("unavailable", "rate_limited"):
            return None
        if method.upper() not in IDEMPOTENT_METHODS and not self.retry.retry_non_idempotent:
            return None
        if attempts.retries >= self.retry.max_retries:
            return None
        wait = parse_retry_after(headers.get("retry-after"))
        if wait is None:
            wait = self.retry.base_delay * (2 ** attempts.retries)
        if wait > self.retry.max_wait:
            return None
        attempts.retries += 1
        return wait * random.uniform(1.0, 1.2)


def _error_code(body: bytes) -> Optional[str]:
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


class BodyTooLarge(ValueError):
    """A streamed body longer than the signer's max_body_bytes."""


def read_limited(chunks: Any, limit: int) -> bytes:
    """Buffers a file or an iterable of chunks, at most limit bytes."""
    if hasattr(chunks, "read"):
        chunks = _file_chunks(chunks)
    out = bytearray()
    for chunk in chunks:
        out += chunk.encode("utf-8") if isinstance(chunk, str) else chunk
        if len(out) > limit:
            raise BodyTooLarge(f"the body is over max_body_bytes ({limit}); it must be buffered to be signed")
    return bytes(out)


def _file_chunks(file: Any) -> Any:
    while True:
        chunk = file.read(64 * 1024)
        if not chunk:
            return
        yield chunk
