"""keygate signatures for httpx, sync and async:
``httpx.Client(auth=KeygateHttpxAuth(...))``."""
import asyncio
import time
from typing import Any, AsyncGenerator, Generator

import httpx

from ._errors import remember
from ._signer import Attempts, BodyTooLarge, Signer


class KeygateHttpxAuth(httpx.Auth):
    """Signs each request over the exact bytes httpx sends (httpx reads a
    streamed body in full first, up to the Signer's max_body_bytes) and
    retries refusals as its Signer's RetryPolicy says, with a fresh nonce and
    timestamp each time. Works with ``httpx.Client`` and ``httpx.AsyncClient``.
    """

    def __init__(self, key_id: str = "", secret: str = "", *, signer: Signer = None, **options: Any) -> None:
        self.signer = signer or Signer(key_id, secret, **options)

    @property
    def clock_offset(self) -> float:
        return self.signer.clock_offset

    def _sign(self, request: httpx.Request) -> None:
        body = request.content
        if len(body) > self.signer.max_body_bytes:
            raise BodyTooLarge(f"the body is over max_body_bytes ({self.signer.max_body_bytes})")
        # raw_path is the request line's target, exactly as httpx sends it.
        signed = self.signer.sign(request.method, request.url.raw_path.decode("ascii"), body)
        request.headers.update(signed.headers)
        remember(request, signed.string_to_sign)

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        attempts = Attempts()
        request.read()
        while True:
            self._sign(request)
            response = yield request
            response.read()
            wait = self.signer.next_step(attempts, request.method, response.status_code, response.headers, response.content)
            if wait is None:
                return
            time.sleep(wait)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        attempts = Attempts()
        await request.aread()
        while True:
            self._sign(request)
            response = yield request
            await response.aread()
            wait = self.signer.next_step(attempts, request.method, response.status_code, response.headers, response.content)
            if wait is None:
                return
            await asyncio.sleep(wait)
