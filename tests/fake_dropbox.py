#!/usr/bin/env python3
"""A small Dropbox API v2 server for smpfs's tests: the subset smpfs uses, in memory, on one
port standing for the api, content and OAuth hosts.

  RPC (JSON body): files/list_folder (recursive; pages of at most the config's page_size,
  has_more/cursor), files/list_folder/continue, files/get_metadata, files/delete_v2.
  Content (arguments in the Dropbox-API-Arg header, HTTP-header-safe JSON; metadata back
  in Dropbox-API-Result): files/download (a path or `rev:REV`, Range -> 206, 416 past the
  end), files/upload (mode add/overwrite, autorename false -> 409 path/conflict),
  files/upload_session/start|append_v2|finish (409 incorrect_offset with correct_offset).
  Errors in Dropbox's shape: {"error_summary": "path/not_found/..", "error": {...}}; 401
  with expired_access_token or invalid_access_token; 400 text for malformed calls.
  OAuth: GET /oauth2/authorize (PKCE, S256 only; answers {"code": ...} as the page a user
  would copy it from), POST /oauth2/token (authorization_code with code_verifier checked
  against the challenge; refresh_token; 400 invalid_grant once revoked).

Test controls under /_admin/ (JSON): config (page_size, token_ttl, revoked, faults: list
of {status, summary, count, match}, ignore_rev: serve the current revision for `rev:`
downloads, as a misbehaving server or proxy might; reset_continue: that many
list_folder/continue calls answer 409 reset, as when Dropbox invalidates a cursor), token (issue tokens for app "test-app"), expire
(every access token now answers 401 expired_access_token), replace ({path, data_b64}: a
new revision), prune ({path}: drop its old revisions), bulk ({folder, count}: that many
small files), state, stats ({"reset": true} zeroes them after answering).

Run: fake_dropbox.py --port PORT
"""

import argparse
import base64
import hashlib
import itertools
import json
import os
import re
import secrets
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

APP_KEY = "test-app"
lock = threading.Lock()
ids = itertools.count(1)
files = {}  # path_lower -> entry
revs = {}  # rev -> (entry, revision)
folders = {}  # path_lower -> path_display
sessions = {}  # session id -> bytearray
cursors = {}  # cursor -> (entries, position)
tokens = {}  # access token -> expiry (0 = expired by /_admin/expire)
refresh_tokens = {}  # refresh token -> app key
codes = {}  # code -> (challenge, app key)
config = {"page_size": 2000, "token_ttl": 14400, "revoked": False, "faults": [],
          "ignore_rev": False, "reset_continue": 0}


def zero_stats():
    return {"requests": 0, "refreshes": 0, "code_exchanges": 0, "downloads": 0,
            "list_pages": 0, "uploads": 0, "session_appends": 0, "faults_served": 0,
            "unauthorized": 0}


stats = zero_stats()


def content_hash(data):
    blocks = b"".join(hashlib.sha256(data[i:i + (4 << 20)]).digest()
                      for i in range(0, len(data), 4 << 20))
    return hashlib.sha256(blocks).hexdigest()


def add_folders(path_display):
    parts = path_display.split("/")[1:-1]
    for i in range(1, len(parts) + 1):
        shown = "/" + "/".join(parts[:i])
        folders.setdefault(shown.lower(), shown)


def store(path_display, data):
    """Stores a new revision of the file at `path_display` (creating it if needed)."""
    lower = path_display.lower()
    entry = files.get(lower)
    if entry is None:
        entry = {"id": f"id:fake{next(ids):06d}", "path_display": path_display, "revisions": []}
        files[lower] = entry
        add_folders(path_display)
    blob = tempfile.TemporaryFile()
    blob.write(data)
    blob.flush()
    revision = {"rev": f"{next(ids):09x}a1b2c3", "size": len(data), "file": blob,
                "hash": content_hash(data), "data": bytes(data)}
    entry["revisions"].append(revision)
    revs[revision["rev"]] = (entry, revision)
    return entry


def file_meta(entry, revision=None):
    revision = revision or entry["revisions"][-1]
    shown = entry["path_display"]
    return {".tag": "file", "name": shown.rsplit("/", 1)[1], "id": entry["id"],
            "path_lower": shown.lower(), "path_display": shown, "rev": revision["rev"],
            "size": revision["size"], "content_hash": revision["hash"],
            "client_modified": "2026-01-01T00:00:00Z", "server_modified": "2026-01-01T00:00:00Z",
            "is_downloadable": True}


def folder_meta(lower):
    shown = folders[lower]
    return {".tag": "folder", "name": shown.rsplit("/", 1)[1], "id": "id:dir" + lower,
            "path_lower": lower, "path_display": shown}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status, payload=b"", headers=None, content_type="application/json"):
        if isinstance(payload, (dict, list)) or payload is None:
            payload = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def error(self, status, summary, error=None):
        """An error in Dropbox's shape; `summary` like "path/not_found"."""
        if error is None:
            tags = summary.split("/")
            error = {".tag": tags[-1]}
            for tag in reversed(tags[:-1]):
                error = {".tag": tag, tag: error}
        self.send(status, {"error_summary": summary + "/..", "error": error})

    def fault(self):
        target = self.command + " " + self.path
        with lock:
            for fault in config["faults"]:
                if fault.get("count", 0) > 0 and fault.get("match", "") in target:
                    fault["count"] -= 1
                    stats["faults_served"] += 1
                    status, summary = fault["status"], fault.get("summary", "internal_error")
                    break
            else:
                return False
        self.body()
        self.error(status, summary)
        return True

    def authorized(self):
        header = self.headers.get("Authorization", "")
        token = header[len("Bearer "):] if header.startswith("Bearer ") else None
        with lock:
            expiry = tokens.get(token)
            revoked = config["revoked"]
        if expiry is None or revoked:
            stats["unauthorized"] += 1
            self.body()
            self.error(401, "invalid_access_token")
            return False
        if expiry < time.time():
            stats["unauthorized"] += 1
            self.body()
            self.error(401, "expired_access_token")
            return False
        return True

    def arg(self):
        """The Dropbox-API-Arg of a content call (must be ASCII)."""
        raw = self.headers.get("Dropbox-API-Arg", "")
        raw.encode("ascii")
        return json.loads(raw)

    # -- dispatch ----------------------------------------------------------------------

    def route(self):
        with lock:
            stats["requests"] += 1
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        if path.startswith("/_admin/"):
            return self.admin(path[len("/_admin/"):])
        if self.fault():
            return
        if path == "/oauth2/token" and self.command == "POST":
            return self.token()
        if path == "/oauth2/authorize" and self.command == "GET":
            return self.authorize(dict(urllib.parse.parse_qsl(url.query)))
        if self.command != "POST" or not path.startswith("/2/"):
            self.body()
            return self.send(404, b"not found", content_type="text/plain")
        if not self.authorized():
            return
        endpoint = path[len("/2/"):]
        content = {
            "files/download": self.download,
            "files/upload": self.upload,
            "files/upload_session/start": self.session_start,
            "files/upload_session/append_v2": self.session_append,
            "files/upload_session/finish": self.session_finish,
        }
        rpc = {
            "files/list_folder": self.list_folder,
            "files/list_folder/continue": self.list_continue,
            "files/get_metadata": self.get_metadata,
            "files/delete_v2": self.delete,
        }
        if endpoint in content:
            try:
                arg = self.arg()
            except (ValueError, UnicodeEncodeError) as e:
                self.body()
                return self.send(400, f"Error in call to API function \"{endpoint}\": bad "
                                 f"Dropbox-API-Arg: {e}".encode(), content_type="text/plain")
            return content[endpoint](arg)
        if endpoint in rpc:
            try:
                arg = json.loads(self.body() or b"null")
            except ValueError:
                return self.send(400, b"Error in call: request body is not JSON",
                                 content_type="text/plain")
            return rpc[endpoint](arg)
        self.body()
        return self.send(400, f"Unknown API function: \"{endpoint}\"".encode(),
                         content_type="text/plain")

    do_GET = do_POST = route

    # -- RPC ---------------------------------------------------------------------------

    def list_folder(self, arg):
        root = arg.get("path", "").lower()
        with lock:
            if root and root not in folders:
                return self.error(409, "path/not_found")
            below = []
            for lower, entry in files.items():
                if lower.startswith(root + "/") and (arg.get("recursive") or "/" not in lower[len(root) + 1:]):
                    below.append(file_meta(entry))
            for lower in folders:
                if lower.startswith(root + "/") and (arg.get("recursive") or "/" not in lower[len(root) + 1:]):
                    below.append(folder_meta(lower))
            below.sort(key=lambda m: m["path_lower"])
            limit = min(int(arg.get("limit") or 2000), config["page_size"])
        return self.page(below, 0, limit)

    def page(self, entries, at, limit):
        cursor = secrets.token_hex(8)
        with lock:
            stats["list_pages"] += 1
            cursors[cursor] = (entries, at + limit, limit)
        self.send(200, {"entries": entries[at:at + limit], "cursor": cursor,
                        "has_more": at + limit < len(entries)})

    def list_continue(self, arg):
        with lock:
            found = cursors.get(arg.get("cursor"))
            if config["reset_continue"] > 0:
                config["reset_continue"] -= 1
                found = None
        if found is None:
            return self.error(409, "reset")
        entries, at, limit = found
        self.page(entries, at, limit)

    def get_metadata(self, arg):
        lower = arg.get("path", "").lower()
        with lock:
            if lower in files:
                return self.send(200, file_meta(files[lower]))
            if lower in folders:
                return self.send(200, folder_meta(lower))
        self.error(409, "path/not_found")

    def delete(self, arg):
        lower = arg.get("path", "").lower()
        with lock:
            entry = files.pop(lower, None)
        if entry is None:
            return self.error(409, "path_lookup/not_found")
        self.send(200, {"metadata": file_meta(entry)})

    # -- content -----------------------------------------------------------------------

    def download(self, arg):
        self.body()
        path = arg.get("path", "")
        with lock:
            if path.startswith("rev:"):
                found = revs.get(path[4:])
                entry, revision = found if found else (None, None)
                if entry is not None and config["ignore_rev"]:
                    # A misbehaving server: the current content, whatever was asked.
                    revision = entry["revisions"][-1]
            else:
                entry = files.get(path.lower())
                revision = entry["revisions"][-1] if entry else None
            stats["downloads"] += 1
        if revision is None:
            return self.error(409, "path/not_found")
        length = revision["size"]
        spec = self.headers.get("Range")
        start, end = 0, length - 1
        if spec:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", spec)
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else length - 1, length - 1)
            if start >= length:
                return self.send(416, b"range not satisfiable", content_type="text/plain")
        self.send_response(206 if spec else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Dropbox-API-Result", json.dumps(file_meta(entry, revision)))
        if spec:
            self.send_header("Content-Range", f"bytes {start}-{end}/{length}")
        self.end_headers()
        self.wfile.flush()
        at, fd, out = start, revision["file"].fileno(), self.connection.fileno()
        while at <= end:
            at += os.sendfile(out, fd, at, end + 1 - at)

    def commit(self, commit, data):
        """Stores `data` as `commit` says (mode add or overwrite, no autorename)."""
        path = commit["path"]
        mode = commit.get("mode", "add")
        mode = mode.get(".tag") if isinstance(mode, dict) else mode
        with lock:
            stats["uploads"] += 1
            exists = path.lower() in files
            if exists and mode == "add":
                return self.error(409, "path/conflict/file")
            if path.lower() in folders:
                return self.error(409, "path/conflict/folder")
            entry = store(path, data)
            meta = file_meta(entry)
        self.send(200, meta)

    def upload(self, arg):
        self.commit(arg, self.body())

    def session_start(self, arg):
        data = self.body()
        sid = "sess-" + secrets.token_hex(6)
        with lock:
            sessions[sid] = bytearray(data)
        self.send(200, {"session_id": sid})

    def session_append(self, arg):
        data = self.body()
        cursor = arg["cursor"]
        with lock:
            stats["session_appends"] += 1
            buf = sessions.get(cursor["session_id"])
            if buf is None:
                return self.error(409, "not_found")
            if cursor["offset"] != len(buf):
                return self.error(409, "incorrect_offset", {".tag": "incorrect_offset",
                                                           "correct_offset": len(buf)})
            buf.extend(data)
        self.send(200, None)

    def session_finish(self, arg):
        data = self.body()
        cursor = arg["cursor"]
        with lock:
            buf = sessions.get(cursor["session_id"])
            if buf is None:
                return self.error(409, "lookup_failed/not_found")
            if cursor["offset"] != len(buf):
                return self.error(409, "lookup_failed/incorrect_offset",
                                  {".tag": "lookup_failed", "lookup_failed": {
                                      ".tag": "incorrect_offset", "correct_offset": len(buf)}})
            buf.extend(data)
            del sessions[cursor["session_id"]]
        self.commit(arg["commit"], bytes(buf))

    # -- OAuth -------------------------------------------------------------------------

    def issue(self, app_key, refresh=None):
        access = "sl.fake-" + secrets.token_hex(12)
        with lock:
            tokens[access] = time.time() + config["token_ttl"]
            answer = {"access_token": access, "token_type": "bearer",
                      "expires_in": config["token_ttl"], "account_id": "dbid:fake-account"}
            if refresh is None:
                refresh = "fake-refresh-" + secrets.token_hex(12)
                refresh_tokens[refresh] = app_key
                answer["refresh_token"] = refresh
        return answer

    def token(self):
        form = dict(urllib.parse.parse_qsl(self.body().decode()))
        bad = lambda description: self.send(  # noqa: E731
            400, {"error": "invalid_grant", "error_description": description})
        grant = form.get("grant_type")
        if grant == "authorization_code":
            with lock:
                found = codes.pop(form.get("code"), None)
                stats["code_exchanges"] += 1
            if found is None:
                return bad("code doesn't exist or has expired")
            challenge, app_key = found
            verifier = form.get("code_verifier", "")
            computed = base64.urlsafe_b64encode(
                hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if computed != challenge or form.get("client_id") != app_key:
                return bad("invalid code verifier")
            return self.send(200, self.issue(app_key))
        if grant == "refresh_token":
            with lock:
                stats["refreshes"] += 1
                app_key = refresh_tokens.get(form.get("refresh_token"))
                revoked = config["revoked"]
            if app_key is None or revoked or form.get("client_id") != app_key:
                return bad("refresh token is invalid or revoked")
            return self.send(200, self.issue(app_key, refresh=form["refresh_token"]))
        self.send(400, {"error": "unsupported_grant_type", "error_description": str(grant)})

    def authorize(self, query):
        if (query.get("response_type") != "code" or query.get("code_challenge_method") != "S256"
                or not query.get("code_challenge") or not query.get("client_id")
                or query.get("token_access_type") != "offline"):
            return self.send(400, {"error": "invalid_request", "query": query})
        code = "fake-code-" + secrets.token_hex(8)
        with lock:
            codes[code] = (query["code_challenge"], query["client_id"])
        self.send(200, {"code": code})

    # -- admin -------------------------------------------------------------------------

    def admin(self, action):
        body = json.loads(self.body() or b"{}")
        if action == "config":
            with lock:
                config.update(body)
                return self.send(200, config)
        if action == "token":
            return self.send(200, self.issue(APP_KEY))
        if action == "expire":
            with lock:
                for t in tokens:
                    tokens[t] = 0
                return self.send(200, {"expired": len(tokens)})
        if action == "replace":
            with lock:
                entry = store(files[body["path"].lower()]["path_display"],
                              base64.b64decode(body["data_b64"]))
                return self.send(200, file_meta(entry))
        if action == "prune":
            with lock:
                entry = files[body["path"].lower()]
                for old in entry["revisions"][:-1]:
                    revs.pop(old["rev"], None)
                entry["revisions"] = entry["revisions"][-1:]
                return self.send(200, file_meta(entry))
        if action == "bulk":
            with lock:
                for i in range(body["count"]):
                    store(f"{body['folder']}/f{i:06d}.bin", b"x" * (i % 7))
                return self.send(200, {"files": len(files)})
        if action == "state":
            with lock:
                return self.send(200, [dict(file_meta(e), revisions=[r["rev"] for r in e["revisions"]])
                                       for e in files.values()])
        if action == "stats":
            global stats
            with lock:
                answer = dict(stats)
                if body.get("reset"):
                    stats = zero_stats()
            return self.send(200, answer)
        self.send(404, {"error": f"no admin action {action}"})


class Server(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)
    Server(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
