#!/usr/bin/env python3
"""A small Google Drive v3 server for smpfs's tests: the subset smpfs uses, in memory.

  files.list (q: '<id>' in parents, trashed = false, name = '…', mimeType =/!= '…';
  pageSize capped by the config's page_size; pageToken), files.get (metadata, alt=media
  with Range), revisions/{rev}?alt=media with Range, drives.list (q: name = '…'),
  metadata-only files.create (folders), files.delete (for good, a folder with everything
  in it; 204 No Content), resumable uploads (files.create / files.update,
  chunks with Content-Range, 308 until complete; a status query, Content-Range
  `bytes */N`, answers 308 with the Range received so far, or 200 with the file once the
  upload is complete), and an OAuth token endpoint: the
  service-account JWT grant (RS256 signature checked with the key this server wrote),
  authorization_code and refresh_token grants, plus an authorization page that redirects
  straight back with a code.

Test controls under /_admin/ (JSON): config (page_size, list_delay (seconds before each
files.list answer), token_ttl, faults, revoked, forbid_revisions), file (add an entry with any name), replace (new revision), prune (drop
old revisions), drive (add a shared drive), token (issue an access token), state, stats (with
{"reset": true}, answered and then zeroed).

Run: fake_gdrive.py --port PORT [--key-out SA.json] [--client-out CLIENT.json]
"""

import argparse
import base64
import hashlib
import itertools
import json
import os
import re
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FOLDER = "application/vnd.google-apps.folder"
READ_SCOPES = {
    "https://www.googleapis.com/auth/drive",
    "https://www.googleapis.com/auth/drive.readonly",
    "https://www.googleapis.com/auth/drive.file",
}
WRITE_SCOPES = {
    "https://www.googleapis.com/auth/drive",
    "https://www.googleapis.com/auth/drive.file",
}
CLIENT_EMAIL = "smpfs-test@fake-project.iam.gserviceaccount.com"

lock = threading.Lock()
ids = itertools.count(1)
clock = itertools.count(1)
ROOT = "0AMyDriveRootFolder"
files = {}  # id -> entry
drives = {}  # id -> name
sessions = {}  # id -> upload session
tokens = {}  # access token -> (expiry, scopes)
refresh_tokens = {}  # refresh token -> scopes
codes = {}  # authorization code -> scopes
config = {
    "page_size": 1000,
    "list_delay": 0,
    "token_ttl": 3600,
    "faults": [],
    "revoked": False,
    "forbid_revisions": [],
}


def zero_stats():
    return {"requests": 0, "token_grants": {}, "faults_served": 0, "media": 0, "lists_at_once": 0,
            "deletes": 0}


stats = zero_stats()
lists_in_flight = 0
public_key = None
base_url = ""


def new_id(prefix="1F"):
    return f"{prefix}{next(ids):06d}xYz"


def created_time():
    t = time.gmtime(1767225600 + next(clock))
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", t)


def add_entry(name, parent, mime, data=None, created=None, drive_id=None):
    fid = new_id()
    entry = {
        "id": fid,
        "name": name,
        "mimeType": mime,
        "parents": [parent],
        "createdTime": created or created_time(),
        "revisions": [],
        "driveId": drive_id or (files[parent].get("driveId") if parent in files else None),
    }
    files[fid] = entry
    if data is not None:
        add_revision(entry, data)
    return entry


def add_revision(entry, data):
    """Adds a revision; its bytes also go to an unlinked file so downloads can use
    sendfile(2) (no Python loop, no GIL held while sending)."""
    number = len(entry["revisions"]) + 1
    blob = tempfile.TemporaryFile()
    blob.write(data)
    blob.flush()
    entry["revisions"].append({
        "id": f"0B{entry['id']}r{number}",
        "data": bytes(data),
        "md5": hashlib.md5(data).hexdigest(),
        "file": blob,
    })


def metadata(entry):
    out = {
        "kind": "drive#file",
        "id": entry["id"],
        "name": entry["name"],
        "mimeType": entry["mimeType"],
        "parents": entry["parents"],
        "createdTime": entry["createdTime"],
    }
    if entry.get("driveId"):
        out["driveId"] = entry["driveId"]
    if entry["revisions"]:
        head = entry["revisions"][-1]
        out["headRevisionId"] = head["id"]
        out["md5Checksum"] = head["md5"]
        out["size"] = str(len(head["data"]))
    return out


def unquote(text):
    return re.sub(r"\\(.)", r"\1", text)


LITERAL = r"'((?:[^'\\]|\\.)*)'"


def matches(entry, query):
    for clause in query.split(" and "):
        clause = clause.strip()
        m = re.fullmatch(LITERAL + r" in parents", clause)
        if m:
            if unquote(m.group(1)) not in entry["parents"]:
                return False
            continue
        if clause == "trashed = false":
            continue
        m = re.fullmatch(r"(name|mimeType) (=|!=) " + LITERAL, clause)
        if m:
            equal = entry[m.group(1)] == unquote(m.group(3))
            if equal != (m.group(2) == "="):
                return False
            continue
        raise ValueError(f"unsupported query clause {clause!r}")
    return True


def verify_jwt(assertion):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    head, claims, signature = assertion.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)
    public_key.verify(
        base64.urlsafe_b64decode(pad(signature)),
        f"{head}.{claims}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    return json.loads(base64.urlsafe_b64decode(pad(claims)))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # As production HTTP servers do (nginx's default, Go's net/http): with Nagle's
    # algorithm on, the body of a short response waits for the client's delayed ACK of
    # the headers, 40 ms on Linux, on every small ranged GET.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    # -- helpers -----------------------------------------------------------------------

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status, payload=b"", headers=None, content_type="application/json"):
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def error(self, status, reason, message):
        self.send(
            status,
            {"error": {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}},
        )

    def fault(self):
        """Serves an injected fault for this request, if one matches."""
        target = self.command + " " + self.path
        with lock:
            for fault in config["faults"]:
                if fault.get("count", 0) > 0 and fault.get("match", "") in target:
                    fault["count"] -= 1
                    stats["faults_served"] += 1
                    status, reason = fault["status"], fault.get("reason", "backendError")
                    break
            else:
                return False
        self.body()
        self.error(status, reason, f"injected {status} {reason}")
        return True

    def authorized(self, write=False):
        header = self.headers.get("Authorization", "")
        token = header[len("Bearer "):] if header.startswith("Bearer ") else None
        with lock:
            granted = tokens.get(token)
            ok = granted and granted[0] > time.time() and not config["revoked"]
            scopes = granted[1] if granted else set()
        if not ok:
            self.body()
            self.send(
                401,
                {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                           "errors": [{"reason": "authError"}], "status": "UNAUTHENTICATED"}},
            )
            return False
        if not scopes & (WRITE_SCOPES if write else READ_SCOPES):
            self.body()
            self.error(403, "insufficientPermissions", "Insufficient Permission: Request had insufficient authentication scopes.")
            return False
        return True

    def media(self, revision):
        stats["media"] += 1
        length = len(revision["data"])
        spec = self.headers.get("Range")
        start, end = 0, length - 1
        if spec:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", spec)
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else length - 1, length - 1)
            if start >= length:
                return self.error(416, "requestedRangeNotSatisfiable", "Request range not satisfiable")
        self.send_response(206 if spec else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if spec:
            self.send_header("Content-Range", f"bytes {start}-{end}/{length}")
        self.end_headers()
        self.wfile.flush()
        at, fd, out = start, revision["file"].fileno(), self.connection.fileno()
        while at <= end:
            at += os.sendfile(out, fd, at, end + 1 - at)

    # -- dispatch ----------------------------------------------------------------------

    def route(self):
        with lock:
            stats["requests"] += 1
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        path = url.path
        if path.startswith("/_admin/"):
            return self.admin(path[len("/_admin/"):])
        if self.fault():
            return
        if path == "/token":
            return self.token()
        if path == "/o/oauth2/auth":
            return self.consent(query)
        m = re.fullmatch(r"/upload-session/(\w+)", path)
        if m:
            return self.chunk(m.group(1))
        write = self.command in ("POST", "PATCH", "DELETE")
        if not self.authorized(write=write):
            return
        if self.command == "GET" and path == "/drive/v3/files":
            return self.list_files(query)
        if self.command == "GET" and path == "/drive/v3/drives":
            return self.list_drives(query)
        m = re.fullmatch(r"/drive/v3/files/([\w-]+)", path)
        if self.command == "GET" and m:
            return self.get_file(m.group(1), query)
        if self.command == "DELETE" and m:
            return self.delete_file(m.group(1))
        m = re.fullmatch(r"/drive/v3/files/([\w-]+)/revisions/([\w-]+)", path)
        if self.command == "GET" and m:
            return self.get_revision(m.group(1), m.group(2), query)
        if self.command == "POST" and path == "/drive/v3/files":
            return self.create_folder()
        if self.command == "POST" and path == "/resumable/upload/drive/v3/files":
            return self.start_upload(None)
        m = re.fullmatch(r"/resumable/upload/drive/v3/files/([\w-]+)", path)
        if self.command == "PATCH" and m:
            return self.start_upload(m.group(1))
        self.body()
        self.error(404, "notFound", f"no route for {self.command} {path}")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = route

    # -- Drive -------------------------------------------------------------------------

    def resolve(self, fid):
        return ROOT if fid == "root" else fid

    def list_files(self, query):
        q = query.get("q", "")
        q = re.sub(LITERAL + r" in parents", lambda m: f"'{self.resolve(unquote(m.group(1)))}' in parents", q)
        size = min(int(query.get("pageSize", 100)), config["page_size"])
        start = int(query.get("pageToken") or 0)
        global lists_in_flight
        with lock:
            lists_in_flight += 1
            stats["lists_at_once"] = max(stats["lists_at_once"], lists_in_flight)
        time.sleep(config["list_delay"])
        with lock:
            lists_in_flight -= 1
            found = sorted(
                (e for e in files.values() if matches(e, q)), key=lambda e: (e["name"], e["id"])
            )
            page = [metadata(e) for e in found[start:start + size]]
        answer = {"kind": "drive#fileList", "files": page}
        if start + size < len(found):
            answer["nextPageToken"] = str(start + size)
        self.send(200, answer)

    def list_drives(self, query):
        m = re.fullmatch(r"name = " + LITERAL, query.get("q", ""))
        with lock:
            found = [
                {"id": did, "name": name, "kind": "drive#drive"}
                for did, name in drives.items()
                if not m or name == unquote(m.group(1))
            ]
        self.send(200, {"drives": found})

    def get_file(self, fid, query):
        with lock:
            entry = files.get(self.resolve(fid))
            if entry is None:
                return self.error(404, "notFound", f"File not found: {fid}.")
            if query.get("alt") != "media":
                return self.send(200, metadata(entry))
            if not entry["revisions"]:
                return self.error(403, "fileNotDownloadable", "Only files with binary content can be downloaded.")
            revision = entry["revisions"][-1]
        self.media(revision)

    def delete_file(self, fid):
        """files.delete: gone for good (not trashed), with everything below a folder."""
        self.body()
        with lock:
            fid = self.resolve(fid)
            if fid not in files or fid == ROOT or fid in drives:
                return self.error(404, "notFound", f"File not found: {fid}.")
            doomed = [fid]
            while doomed:
                gone = files.pop(doomed.pop())
                doomed += [e["id"] for e in files.values() if gone["id"] in e["parents"]]
            stats["deletes"] += 1
        self.send_response(204)
        self.end_headers()

    def get_revision(self, fid, rev, query):
        with lock:
            entry = files.get(fid)
            if entry is None:
                return self.error(404, "notFound", f"File not found: {fid}.")
            if fid in config["forbid_revisions"]:
                return self.error(403, "insufficientFilePermissions", "The user does not have sufficient permissions for this file.")
            revision = next((r for r in entry["revisions"] if r["id"] == rev), None)
            if revision is None:
                return self.error(404, "notFound", f"Revision not found: {rev}.")
        if query.get("alt") != "media":
            return self.send(200, {"id": rev})
        self.media(revision)

    def create_folder(self):
        meta = json.loads(self.body() or b"{}")
        parent = self.resolve((meta.get("parents") or ["root"])[0])
        with lock:
            if parent != ROOT and parent not in drives and parent not in files:
                return self.error(404, "notFound", f"File not found: {parent}.")
            entry = add_entry(meta["name"], parent, meta.get("mimeType", FOLDER),
                              drive_id=parent if parent in drives else None)
            self.send(200, metadata(entry))

    def start_upload(self, replace):
        meta = json.loads(self.body() or b"{}")
        with lock:
            if replace is not None and replace not in files:
                return self.error(404, "notFound", f"File not found: {replace}.")
            sid = new_id("S")
            sessions[sid] = {"meta": meta, "replace": replace, "data": bytearray()}
        self.send(200, b"", {"Location": f"{base_url}/upload-session/{sid}"})

    def chunk(self, sid):
        data = self.body()
        spec = self.headers.get("Content-Range", "")
        with lock:
            session = sessions.get(sid)
            if session is None:
                return self.error(404, "notFound", "No such upload session.")
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", spec)
            if "done" in session:
                # A finished session: a status query ("bytes */N") answers with the file,
                # as Google's does; more bytes are refused.
                if m:
                    return self.error(400, "badContentRange", "the upload is already complete")
                return self.send(200, metadata(files[session["done"]]))
            if not m:
                have = len(session["data"])
                return self.send(308, b"", {"Range": f"bytes=0-{have - 1}"} if have else {})
            first, last, total = map(int, m.groups())
            if first != len(session["data"]) or last - first + 1 != len(data):
                return self.error(400, "badContentRange", f"chunk {spec} does not follow {len(session['data'])} bytes")
            session["data"] += data
            if len(session["data"]) < total:
                return self.send(308, b"", {"Range": f"bytes=0-{len(session['data']) - 1}"})
            if session["replace"]:
                entry = files.get(session["replace"])
                if entry is None:
                    return self.error(404, "notFound", f"File not found: {session['replace']}.")
                add_revision(entry, session["data"])
            else:
                meta = session["meta"]
                parent = self.resolve((meta.get("parents") or ["root"])[0])
                entry = add_entry(meta["name"], parent, meta.get("mimeType", "application/octet-stream"),
                                  data=session["data"], drive_id=parent if parent in drives else None)
            session["done"] = entry["id"]
            session["data"] = b""
            self.send(200, metadata(entry))

    # -- OAuth -------------------------------------------------------------------------

    def issue(self, scopes, refresh=False):
        token = "ya29.fake-" + new_id("T")
        tokens[token] = (time.time() + config["token_ttl"], set(scopes))
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": config["token_ttl"]}
        if refresh:
            rt = "1//fake-refresh-" + new_id("R")
            refresh_tokens[rt] = set(scopes)
            answer["refresh_token"] = rt
        return answer

    def token(self):
        form = dict(urllib.parse.parse_qsl(self.body().decode()))
        grant = form.get("grant_type", "")
        with lock:
            stats["token_grants"][grant] = stats["token_grants"].get(grant, 0) + 1
            revoked = config["revoked"]
        refused = lambda text: self.send(400, {"error": "invalid_grant", "error_description": text})
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            try:
                claims = verify_jwt(form["assertion"])
            except Exception as e:  # noqa: BLE001 - any bad assertion is refused
                return refused(f"Invalid JWT Signature. ({type(e).__name__})")
            if revoked:
                return refused("Invalid JWT Signature.")
            if claims.get("iss") != CLIENT_EMAIL or claims.get("aud") != f"{base_url}/token":
                return refused("Invalid JWT: iss or aud")
            with lock:
                return self.send(200, self.issue(claims.get("scope", "").split()))
        if grant == "authorization_code":
            with lock:
                scopes = codes.pop(form.get("code"), None)
                if scopes is None:
                    return refused("Malformed auth code.")
                return self.send(200, self.issue(scopes, refresh=True))
        if grant == "refresh_token":
            with lock:
                scopes = refresh_tokens.get(form.get("refresh_token"))
                if scopes is None or revoked:
                    return refused("Token has been expired or revoked.")
                return self.send(200, self.issue(scopes))
        self.send(400, {"error": "unsupported_grant_type"})

    def consent(self, query):
        with lock:
            code = "4/fake-code-" + new_id("C")
            codes[code] = set(query.get("scope", "").split())
        target = query["redirect_uri"]
        target += ("&" if "?" in target else "?") + urllib.parse.urlencode({"code": code})
        self.send(302, b"", {"Location": target})

    # -- test controls -----------------------------------------------------------------

    def admin(self, action):
        body = json.loads(self.body() or b"{}")
        with lock:
            if action == "config":
                config.update(body)
                return self.send(200, config)
            if action == "state":
                return self.send(200, [
                    dict(metadata(e), revisions=[r["id"] for r in e["revisions"]]) for e in files.values()
                ])
            if action == "stats":
                answer = dict(stats)
                if body.get("reset"):
                    stats.clear()
                    stats.update(zero_stats())
                return self.send(200, answer)
            if action == "token":
                return self.send(200, self.issue(READ_SCOPES))
            if action == "drive":
                did = new_id("0AD")
                drives[did] = body["name"]
                files[did] = {"id": did, "name": body["name"], "mimeType": FOLDER, "parents": [],
                              "createdTime": created_time(), "revisions": [], "driveId": did}
                return self.send(200, {"id": did})
            if action == "file":
                data = base64.b64decode(body["data"]) if "data" in body else None
                parent = self.resolve(body.get("parent", "root"))
                entry = add_entry(body["name"], parent, body.get("mimeType", "application/octet-stream"),
                                  data=data, created=body.get("createdTime"),
                                  drive_id=parent if parent in drives else None)
                return self.send(200, metadata(entry))
            if action == "copy":
                source = files[body["id"]]
                entry = add_entry(body.get("name", source["name"]), self.resolve(body["parent"]),
                                  source["mimeType"], data=source["revisions"][-1]["data"],
                                  created=body.get("createdTime"))
                return self.send(200, metadata(entry))
            if action == "replace":
                add_revision(files[body["id"]], base64.b64decode(body["data"]))
                return self.send(200, metadata(files[body["id"]]))
            if action == "prune":
                entry = files[body["id"]]
                entry["revisions"] = entry["revisions"][-1:]
                return self.send(200, metadata(entry))
        self.error(404, "notFound", f"no admin action {action}")


class Server(ThreadingHTTPServer):
    # A client opening many connections at once (parallel ranged reads) must not have its
    # SYNs dropped by a full accept queue (the default is 5): each costs a 1 s retransmit.
    request_queue_size = 128

    def handle_error(self, request, client_address):
        """Clients that hang up mid-answer (timeouts under test) are not errors."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def write_keys(port, key_out, client_out):
    global public_key
    if key_out:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_key = private.public_key()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        key = {
            "type": "service_account",
            "project_id": "fake-project",
            "private_key_id": "0123456789abcdef",
            "private_key": pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "1234567890",
            "auth_uri": f"http://127.0.0.1:{port}/o/oauth2/auth",
            "token_uri": f"http://127.0.0.1:{port}/token",
        }
        with open(key_out, "w") as f:
            json.dump(key, f)
    if client_out:
        client = {
            "installed": {
                "client_id": "fake-client.apps.googleusercontent.com",
                "client_secret": "fake-client-secret",
                "auth_uri": f"http://127.0.0.1:{port}/o/oauth2/auth",
                "token_uri": f"http://127.0.0.1:{port}/token",
                "redirect_uris": ["http://localhost"],
            }
        }
        with open(client_out, "w") as f:
            json.dump(client, f)


def main():
    global base_url
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-out")
    parser.add_argument("--client-out")
    args = parser.parse_args()
    base_url = f"http://127.0.0.1:{args.port}"
    files[ROOT] = {"id": ROOT, "name": "My Drive", "mimeType": FOLDER, "parents": [],
                   "createdTime": created_time(), "revisions": [], "driveId": None}
    write_keys(args.port, args.key_out, args.client_out)
    # Hand the GIL over quickly: many connections stream at once.
    sys.setswitchinterval(0.0005)
    server = Server(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
