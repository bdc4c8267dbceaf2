#!/usr/bin/env python3
"""A real keygate to run an SDK's behaviour suite against.

    sdk/testbed.py --keygate target/debug/keygate -- python -m unittest ...

Starts, on random loopback ports and in a scratch directory:

- the main server, in gateway mode in front of a small upstream of our own
  (below), with an application and several keys set up through the admin API;
- a copy of it whose clock runs ten minutes ahead (libfaketime), for clock
  skew correction;
- a copy whose database is locked by another connection, so that its signed
  requests are refused with 503 `unavailable`, until the first such refusal
  shows in its metrics: then the lock is released.

then runs the command with the environment below, and stops everything when
it exits, with its exit status. Standard library only.

    KEYGATE_URL                 main server
    KEYGATE_SHIFTED_URL         same keys, server clock +600 s (skew 300 s)
    KEYGATE_LOCKED_URL          same keys, first signed request(s) 503
    KEYGATE_KEY_ID/_SECRET      an active key
    KEYGATE_OLD_KEY_ID/_SECRET  a key that was rotated, in its grace period
    KEYGATE_NEW_KEY_ID/_SECRET  the key that replaced it
    KEYGATE_REVOKED_KEY_ID/_SECRET   a revoked key
    KEYGATE_LIMITED_KEY_ID/_SECRET   rate limit 1 a second, burst 1
    KEYGATE_NARROW_KEY_ID/_SECRET    may only GET /v1/whoami
    KEYGATE_VECTORS             tests/vectors/kg1.json

Every server's body limit is 64 KiB (KEYGATE_MAX_BODY_BYTES).

The upstream behind the main server (any path other than keygate's own):
`/flaky/<token>` answers 503 with `Retry-After: 1` the first time it sees a
token and 200 after; every other path answers 200 with what it received:
{"method", "target", "body_sha256", "app_id", "key_id"}.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ADMIN_TOKEN = "testbed-admin-token-0123456789abcdef"
REPO = Path(__file__).resolve().parent.parent


class Upstream(BaseHTTPRequestHandler):
    seen = set()
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/flaky/"):
            with Upstream.lock:
                first = self.path not in Upstream.seen
                Upstream.seen.add(self.path)
            if first:
                payload = b'{"error":{"code":"unavailable","message":"the upstream is busy"}}'
                self.send_response(503)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
        payload = json.dumps({
            "method": self.command,
            "target": self.path,
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "app_id": self.headers.get("X-Keygate-App-Id"),
            "key_id": self.headers.get("X-Keygate-Key-Id"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = answer


def libfaketime():
    for candidate in sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1")) + [
        Path("/usr/lib/faketime/libfaketime.so.1")
    ]:
        if candidate.exists():
            return str(candidate)
    sys.exit("testbed: libfaketime is not installed (Debian package faketime; scripts/test installs it)")


class Server:
    """One `keygate serve`, its addresses read from its start-up log line."""

    def __init__(self, keygate, db, extra_env):
        env = dict(os.environ)
        env.update({
            "KEYGATE_DB": str(db),
            "KEYGATE_LISTEN": "127.0.0.1:0",
            "KEYGATE_ADMIN_LISTEN": "127.0.0.1:0",
            "KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            "KEYGATE_LOG_FORMAT": "json",
            # Small, so that a suite's body over it (64 KiB + 1) is written
            # into the socket before keygate refuses it and closes: with a
            # body of megabytes the client could still be writing then, and
            # see the connection reset instead of the 413.
            "KEYGATE_MAX_BODY_BYTES": str(64 * 1024),
        })
        env.update(extra_env)
        self.log = []
        self.process = subprocess.Popen(
            [keygate, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        started = threading.Event()

        def read_log():
            for line in self.process.stderr:
                self.log.append(line)
                if not started.is_set() and "keygate listening" in line:
                    fields = json.loads(line)
                    self.public, self.admin = fields["public"], fields["admin"]
                    started.set()
            started.set()

        threading.Thread(target=read_log, daemon=True).start()
        if not started.wait(30) or not hasattr(self, "public"):
            self.stop()
            sys.exit("testbed: keygate did not start:\n" + "".join(self.log))
        self.url = f"http://{self.public}"

    def admin_call(self, method, path, body=None):
        request = urllib.request.Request(
            f"http://{self.admin}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw.strip().startswith(b"{") else raw.decode()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keygate", default=os.environ.get("KEYGATE_BIN", str(REPO / "target/debug/keygate")))
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")

    scratch = Path(tempfile.mkdtemp(prefix="keygate-testbed-"))
    servers = []
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        master_key = scratch / "master-key"
        common = {"KEYGATE_MASTER_KEY_FILE": str(master_key)}
        (scratch / "main").mkdir()
        main_server = Server(args.keygate, scratch / "main/keygate.db", {
            **common, "KEYGATE_UPSTREAM": f"http://127.0.0.1:{upstream.server_port}",
        })
        servers.append(main_server)
        env = setup_keys(main_server)

        # The copies share the keys: a consistent copy of the database
        # (SQLite's backup API) and the same master key.
        copies = {}
        for name in ("shifted", "locked"):
            (scratch / name).mkdir()
            source = sqlite3.connect(scratch / "main/keygate.db")
            target = sqlite3.connect(scratch / name / "keygate.db")
            source.backup(target)
            source.close()
            target.close()
            copies[name] = scratch / name / "keygate.db"

        shifted = Server(args.keygate, copies["shifted"], {
            **common,
            "LD_PRELOAD": libfaketime(),
            "FAKETIME": "+600s",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        })
        servers.append(shifted)
        locked = Server(args.keygate, copies["locked"], {**common, "KEYGATE_DB_BUSY_TIMEOUT_MS": "200"})
        servers.append(locked)
        holder = sqlite3.connect(copies["locked"], isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        threading.Thread(target=release_after_first_refusal, args=(locked, holder), daemon=True).start()

        env.update({
            "KEYGATE_URL": main_server.url,
            "KEYGATE_SHIFTED_URL": shifted.url,
            "KEYGATE_LOCKED_URL": locked.url,
            "KEYGATE_VECTORS": str(REPO / "tests/vectors/kg1.json"),
        })
        status = subprocess.call(command, env={**os.environ, **env})
        if status != 0:
            for name, server in zip(("main", "shifted", "locked"), servers):
                print(f"--- testbed: {name} server log (last 30 lines)", file=sys.stderr)
                sys.stderr.write("".join(server.log[-30:]))
        return status
    finally:
        for server in servers:
            server.stop()
        upstream.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)


def setup_keys(server):
    app = server.admin_call("POST", "/admin/apps", {"name": "sdk-testbed"})
    app_id = app["app_id"]

    def new_key(name):
        key = server.admin_call("POST", f"/admin/apps/{app_id}/keys", {"name": name})
        return key["key_id"], key["secret"]

    env = {}

    def export(prefix, key):
        env[f"KEYGATE_{prefix}KEY_ID"], env[f"KEYGATE_{prefix}SECRET"] = key

    export("", new_key("main"))
    old = new_key("rotated")
    new = server.admin_call("POST", f"/admin/keys/{old[0]}/rotate", {"grace_seconds": 3600})
    export("OLD_", old)
    export("NEW_", (new["key_id"], new["secret"]))
    revoked = new_key("revoked")
    server.admin_call("POST", f"/admin/keys/{revoked[0]}/revoke")
    export("REVOKED_", revoked)
    limited = new_key("limited")
    server.admin_call("PUT", f"/admin/keys/{limited[0]}/policy", {"rate_limit": {"per_second": 1, "burst": 1}})
    export("LIMITED_", limited)
    narrow = new_key("narrow")
    server.admin_call("PUT", f"/admin/keys/{narrow[0]}/policy", {"rules": [{"methods": ["GET"], "path": "/v1/whoami"}]})
    export("NARROW_", narrow)
    env["KEYGATE_APP_ID"] = app_id
    return env


def release_after_first_refusal(server, holder):
    """Holds the lock until keygate has refused a signed request for it."""
    refused = re.compile(r'^keygate_signed_requests_total\{result="unavailable"\} ([0-9.]+)', re.M)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            found = refused.search(server.admin_call("GET", "/admin/metrics"))
        except OSError:
            found = None
        if found and float(found.group(1)) >= 1:
            break
        time.sleep(0.02)
    holder.execute("ROLLBACK")
    holder.close()


if __name__ == "__main__":
    sys.exit(main())
