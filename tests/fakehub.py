"""A small Hugging Face hub protocol server for what olah cannot produce: auth failures, missing revisions, 5xx,
corrupted bytes, connections cut mid-body, slow transfers, and a count of the bytes it served.

It implements the endpoints huggingface_hub's download path calls: model info at a revision, the recursive tree
listing, and HEAD/GET on ``/{repo}/resolve/{revision}/{path}`` (ETag, X-Repo-Commit, X-Linked-Size, Range), with
the ``X-Error-Code`` headers the real hub sends.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_MIN_BYTES = 1024


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    sha: str = "0" * 40
    branches: dict[str, str] = field(default_factory=dict)
    gated: bool = False

    def __post_init__(self) -> None:
        digest = hashlib.sha1()
        for path, content in sorted(self.files.items()):
            digest.update(path.encode() + b"\0" + hashlib.sha256(content).digest())
        self.sha = digest.hexdigest()
        self.branches.setdefault("main", self.sha)

    def tree(self) -> list[dict[str, object]]:
        entries: list[dict[str, object]] = []
        for path, content in sorted(self.files.items()):
            blob = hashlib.sha1(f"blob {len(content)}\0".encode() + content).hexdigest()
            entry: dict[str, object] = {"type": "file", "oid": blob, "size": len(content), "path": path}
            if len(content) >= LFS_MIN_BYTES:
                entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
            entries.append(entry)
        return entries

    def etag(self, path: str) -> str:
        content = self.files[path]
        if len(content) >= LFS_MIN_BYTES:
            return hashlib.sha256(content).hexdigest()
        return hashlib.sha1(f"blob {len(content)}\0".encode() + content).hexdigest()


@dataclass
class Faults:
    #: Status codes returned, one per request, before normal service resumes.
    statuses: list[int] = field(default_factory=list)
    #: Files served with the same size but different bytes.
    corrupt: set[str] = field(default_factory=set)
    #: Files whose next GET sends half the body, then closes the connection.
    cut_once: set[str] = field(default_factory=set)
    #: Throttle file bodies to this many bytes per second (0: no limit).
    bytes_per_s: int = 0
    #: Answer Range requests with the whole file (200), as some mirrors do.
    ignore_range: bool = False
    #: A token every request must carry (Authorization: Bearer ...); None: public.
    required_token: str | None = None
    #: Redirect LFS files to this other origin (a CDN, as huggingface.co does: 302 with X-Linked-* headers).
    lfs_redirect_to: str | None = None


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.faults = Faults()
        self.served: Counter[str] = Counter()
        self.requests: list[tuple[str, str, str | None]] = []
        self.tokens_seen: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, method: str, path: str, byte_range: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, byte_range))

    def count(self, path: str, sent: int) -> None:
        with self._lock:
            self.served[path] += sent

    def settled_bytes(self, quiet_s: float = 0.4) -> int:
        """Bytes served so far, once no more have been written for ``quiet_s`` (after a client was killed, the
        server may still be writing into the dead connection)."""
        settled = -1
        while settled != sum(self.served.values()):
            settled = sum(self.served.values())
            time.sleep(quiet_s)
        return settled

    def next_status(self) -> int | None:
        with self._lock:
            return self.faults.statuses.pop(0) if self.faults.statuses else None


_REVISION = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>.+)$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(/.*)?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def _error(self, status: int, code: str | None = None, message: str = "") -> None:
            body = json.dumps({"error": message or code or str(status)}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            if message:
                self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _repo(self, repo_id: str, revision: str) -> tuple[FakeRepo, str] | None:
            repo = hub.repos.get(repo_id)
            auth = self.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
            if token:
                hub.tokens_seen.add(token)
            required = hub.faults.required_token
            if repo is None:
                self._error(404 if token else 401, "RepoNotFound", "Repository not found")
                return None
            if repo.gated or required is not None:
                if token is None:
                    self._error(401, "GatedRepo", "Access to model is restricted. You must be authenticated.")
                    return None
                if token != required:
                    self._error(403, "GatedRepo", "Access to model is restricted and you are not in the list.")
                    return None
            sha = repo.branches.get(revision, revision if revision == repo.sha else None)
            if sha is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None
            return repo, sha

        def _serve(self) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            hub.record(self.command, path, self.headers.get("Range"))
            status = hub.next_status()
            if status is not None:
                self._error(status, None, "injected failure")
                return
            if match := _REVISION.match(path):
                found = self._repo(match["repo"], match["rev"])
                if found:
                    repo, sha = found
                    siblings = [{"rfilename": name} for name in sorted(repo.files)]
                    self._json(
                        {
                            "id": match["repo"],
                            "modelId": match["repo"],
                            "sha": sha,
                            "siblings": siblings,
                            "private": False,
                            "gated": "manual" if repo.gated else False,
                        }
                    )
            elif match := _TREE.match(path):
                found = self._repo(match["repo"], match["rev"])
                if found:
                    self._json(found[0].tree())
            elif match := _RESOLVE.match(path):
                found = self._repo(match["repo"], match["rev"])
                if found:
                    self._file(found[0], found[1], match["path"])
            else:
                self._error(404, None, "no such endpoint")

        def _file(self, repo: FakeRepo, sha: str, path: str) -> None:
            if path not in repo.files:
                self._error(404, "EntryNotFound", f"{path} does not exist")
                return
            content = repo.files[path]
            if hub.faults.lfs_redirect_to and len(content) >= LFS_MIN_BYTES:
                self.send_response(302)
                self.send_header("Location", f"{hub.faults.lfs_redirect_to}{urlsplit(self.path).path}")
                self.send_header("X-Repo-Commit", sha)
                self.send_header("X-Linked-Etag", f'"{repo.etag(path)}"')
                self.send_header("X-Linked-Size", str(len(content)))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path in hub.faults.corrupt:
                content = bytes(byte ^ 0xFF for byte in content)
            start = 0
            if not hub.faults.ignore_range and (match := re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))):
                start = int(match.group(1))
            body = content[start:]
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", sha)
            self.send_header("ETag", f'"{repo.etag(path)}"')
            if len(content) >= LFS_MIN_BYTES:
                self.send_header("X-Linked-Etag", f'"{repo.etag(path)}"')
                self.send_header("X-Linked-Size", str(len(content)))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "HEAD":
                return
            cut = path in hub.faults.cut_once
            if cut:
                hub.faults.cut_once.discard(path)
                body = body[: len(body) // 2]
            self._write_body(path, body)
            if cut:
                self.close_connection = True
                self.connection.shutdown(2)

        def _write_body(self, path: str, body: bytes) -> None:
            chunk = 64 * 1024
            rate = hub.faults.bytes_per_s
            for offset in range(0, len(body), chunk):
                piece = body[offset : offset + chunk]
                try:
                    self.wfile.write(piece)
                except OSError:
                    return  # the client went away (killed)
                hub.count(path, len(piece))
                if rate:
                    time.sleep(len(piece) / rate)

        do_GET = _serve
        do_HEAD = _serve

    return Handler
