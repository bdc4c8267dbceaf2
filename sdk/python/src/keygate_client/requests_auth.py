"""keygate signatures for requests: ``requests.get(url, auth=KeygateAuth(...))``."""
import time
from typing import Any

import requests
from requests.cookies import extract_cookies_to_jar

from ._errors import remember
from ._signer import Attempts, Signer, read_limited


class KeygateAuth(requests.auth.AuthBase):
    """Signs each request (KG1, or RFC 9421 with ``scheme="rfc9421"``) over
    the exact bytes requests sends, and retries refusals as its Signer's
    RetryPolicy says, re-signing each time with a fresh nonce and timestamp.

    Takes the Signer's keyword arguments, or ``signer=`` a Signer to share
    (its clock offset) between sessions and httpx clients.
    """

    def __init__(self, key_id: str = "", secret: str = "", *, signer: Signer = None, **options: Any) -> None:
        self.signer = signer or Signer(key_id, secret, **options)

    @property
    def clock_offset(self) -> float:
        return self.signer.clock_offset

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        self._buffer_body(request)
        self._sign(request)
        attempts = Attempts()
        request.register_hook("response", lambda response, **kwargs: self._on_response(attempts, response, **kwargs))
        return request

    def _buffer_body(self, request: requests.PreparedRequest) -> None:
        """Makes the body bytes, so that what is signed is what is sent (and
        can be sent again). A str body is sent as UTF-8."""
        body = request.body
        if body is None or isinstance(body, bytes):
            return
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        else:  # a file or a generator
            body = read_limited(body, self.signer.max_body_bytes)
            request.headers.pop("Transfer-Encoding", None)
        request.body = body
        request.headers["Content-Length"] = str(len(body))

    def _sign(self, request: requests.PreparedRequest) -> None:
        # path_url is the request line's target: requests' adapter sends it as is.
        signed = self.signer.sign(request.method, request.path_url, request.body or b"")
        request.headers.update(signed.headers)
        remember(request, signed.string_to_sign)

    def _on_response(self, attempts: Attempts, response: requests.Response, **kwargs: Any) -> requests.Response:
        # The way requests' own digest auth sends a second request from its hook.
        while True:
            wait = self.signer.next_step(
                attempts, response.request.method, response.status_code, response.headers, response.content
            )
            if wait is None:
                return response
            time.sleep(wait)
            response.close()
            again = response.request.copy()
            extract_cookies_to_jar(again._cookies, response.request, response.raw)
            again.prepare_cookies(again._cookies)
            self._sign(again)
            retried = response.connection.send(again, **kwargs)
            retried.history.append(response)
            retried.request = again
            response = retried
