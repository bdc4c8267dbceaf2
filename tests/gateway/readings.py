"""An upstream that reads each request's path the ways real servers do,
and answers with every reading, for keygate's differential path test
(tests/api/gateway_paths.rs).

Each reading is one server family's, applied to the target exactly as it
arrived on the request line (http.server keeps it raw in self.path):

- plain:      percent-decode once, then resolve dot segments and merge
              slashes (Python's posixpath.normpath, as WSGI apps and most
              frameworks do);
- tomcat:     cut ';' parameters from every raw segment first, then as plain
              (Tomcat, Spring, Jetty);
- backslash:  '\\' read as '/' after decoding (IIS, WHATWG URL parsers);
- twice:      percent-decode twice (frameworks that decode again);
- everything: all of the above at once.

Usage: python3 readings.py PORT_FILE   (binds 127.0.0.1:0, writes its port
to PORT_FILE, serves until killed). The answer is 200 with the readings as
a JSON object in the body.
"""
import json
import posixpath
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_to_bytes


def decode(path):
    return unquote_to_bytes(path).decode("utf-8", "surrogateescape")


def resolve(path):
    # normpath keeps a leading '//' (POSIX leaves its meaning open): a web
    # server merges it like any other.
    resolved = posixpath.normpath("/" + path.lstrip("/"))
    return resolved + ("/" if path.endswith("/") and resolved != "/" else "")


def cut_parameters(raw):
    return "/".join(segment.split(";", 1)[0] for segment in raw.split("/"))


def readings(raw_path):
    return {
        "plain": resolve(decode(raw_path)),
        "tomcat": resolve(decode(cut_parameters(raw_path))),
        "backslash": resolve(decode(raw_path).replace("\\", "/")),
        "twice": resolve(decode(decode(raw_path))),
        "everything": resolve(
            cut_parameters(decode(decode(cut_parameters(raw_path))).replace("\\", "/"))
        ),
    }


class Handler(BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        raw_path = self.path.split("?", 1)[0]
        body = json.dumps(readings(raw_path), ensure_ascii=True).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os

    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()
