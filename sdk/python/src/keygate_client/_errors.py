"""Refusals as a typed error."""
import json
import weakref
from typing import Any, Optional

# What each request was signed over, kept beside the request object (the
# client libraries' request types take no attribute of ours reliably).
_signed_over: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def remember(request: Any, string_to_sign: str) -> None:
    try:
        _signed_over[request] = string_to_sign
    except TypeError:
        pass


def signed_over(request: Any) -> Optional[str]:
    try:
        return _signed_over.get(request)
    except TypeError:
        return None


def diff_lines(ours: str, theirs: str) -> str:
    """Both strings to sign side by side, the first differing line marked."""
    a, b = ours.split("\n"), theirs.split("\n")
    width = max([len(line) for line in a] + [4])
    out = [f"  {'ours'.ljust(width)} | server's"]
    marked = False
    for i in range(max(len(a), len(b))):
        left = a[i] if i < len(a) else ""
        right = b[i] if i < len(b) else ""
        mark = " "
        if left != right and not marked:
            mark, marked = ">", True
        out.append(f"{mark} {left.ljust(width)} | {right}")
    if not marked:
        out.append("  (the lines are equal: the secret differs)")
    return "\n".join(out)


class KeygateError(Exception):
    """A request keygate refused, with the contract's error code.

    code, status, message and request_id come from the refusal; server_time
    with timestamp_out_of_range, retry_after with 429 and 503; for
    signature_mismatch, server_string_to_sign is the server's and
    string_to_sign this client's, and diff() shows both with the first
    differing line marked.
    """

    def __init__(self, code: str, status: int, message: str, *, request_id: Optional[str] = None,
                 server_time: Optional[int] = None, retry_after: Optional[float] = None,
                 server_string_to_sign: Optional[str] = None, string_to_sign: Optional[str] = None,
                 body: Any = None):
        self.code = code
        self.status = status
        self.message = message
        self.request_id = request_id
        self.server_time = server_time
        self.retry_after = retry_after
        self.server_string_to_sign = server_string_to_sign
        self.string_to_sign = string_to_sign
        self.body = body
        super().__init__(str(self))

    def diff(self) -> Optional[str]:
        if self.server_string_to_sign is None or self.string_to_sign is None:
            return None
        return diff_lines(self.string_to_sign, self.server_string_to_sign)

    def __str__(self) -> str:
        text = f"{self.status} {self.code}: {self.message}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        diff = self.diff()
        if diff:
            text += "\n" + diff
        return text

    @classmethod
    def parse(cls, status: int, headers: Any, body: bytes, string_to_sign: Optional[str] = None) -> Optional["KeygateError"]:
        """The refusal in an answer, or None when the answer is not one."""
        if status < 400:
            return None
        try:
            error = json.loads(body)["error"]
            code = error["code"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(code, str):
            return None
        return cls(
            code,
            status,
            str(error.get("message", "")),
            request_id=error.get("request_id") or headers.get("x-request-id"),
            server_time=error.get("server_time"),
            retry_after=parse_retry_after(headers.get("retry-after")),
            server_string_to_sign=error.get("string_to_sign"),
            string_to_sign=string_to_sign,
            body=error,
        )

    @classmethod
    def from_response(cls, response: Any) -> Optional["KeygateError"]:
        """The refusal in a requests or httpx response, or None."""
        return cls.parse(response.status_code, response.headers, response.content,
                         signed_over(response.request))


def raise_for_refusal(response: Any) -> Any:
    """Raises KeygateError when a requests or httpx response is a refusal
    with a code; returns the response otherwise."""
    error = KeygateError.from_response(response)
    if error is not None:
        raise error
    return response


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: treated as absent
    return seconds if seconds >= 0 else None
