"""A record of what Tumblr answered, and a server that answers from one.

`Recorder` keeps each request the client sends and the answer it got (the
method, path, query, JSON body; the status, the headers that matter and
the JSON answer) and writes them, when the pass is over, as one JSON file
per exchange: `DIR/0001-GET.json`, ... Credentials never reach a file:
OAuth headers are not recorded, `api_key` and `oauth_*` parameters and
every value of the credentials wherever it appears are replaced by
`REDACTED`. With `pseudonymize`, every blog name (in paths, fields, text
and `NAME.tumblr.com` addresses) becomes a readable pseudonym
(bot.corpus.pseudonyms, under a key made for this recording and thrown
away) and every blog uuid a keyed hash.

`ReplayServer` answers requests from such a recording, in order, on
127.0.0.1, so a recording made on real Tumblr can be replayed against the
client in a test.
"""

import hashlib
import hmac
import http.server
import json
import os
import re
import secrets
import threading
import urllib.parse
from typing import Any, Dict, List, Optional

from bot.tumblr.errors import UserError

REDACTED = "REDACTED"
# Response headers worth keeping: the rate limits, the clock, the type.
_KEPT_HEADERS = re.compile(r"x-ratelimit-.*|retry-after|date|content-type",
                           re.IGNORECASE)
_SECRET_PARAMS = re.compile(r"api_key|oauth_.*|.*token.*|.*secret.*",
                            re.IGNORECASE)
# Fields that hold a blog's name, and a blog's uuid ("t:" and 22 letters).
_NAME_FIELDS = re.compile(r"(?:.*_)?(?:blog_?)?name|.*tumblelog.*")
_UUID = re.compile(r"^t:[A-Za-z0-9_-]{4,}$")
_BLOG_PATH = re.compile(r"^/v2/blog/([^/]+)")


class Recorder:
  """Exchanges with the API, kept until `write` puts them in `directory`."""

  def __init__(self, directory: str, credentials, pseudonymize: bool = False):
    self.directory = directory
    self.pseudonymize = pseudonymize
    self._secrets = [v for v in credentials.client_args() if v]
    self.exchanges: List[dict] = []

  def add(self, method: str, path: str, params: Optional[dict],
          json_body: Any, status: int, headers, body: Any) -> None:
    self.exchanges.append(self._redacted({
        "method": method, "path": path,
        "query": {str(k): str(v) for k, v in (params or {}).items()},
        "request_body": json_body, "status": status,
        "headers": {k: v for k, v in headers.items()
                    if _KEPT_HEADERS.fullmatch(k)},
        "body": body}))

  def _redacted(self, value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
      return {k: self._redacted(v, k) for k, v in value.items()}
    if isinstance(value, list):
      return [self._redacted(v) for v in value]
    if isinstance(value, str):
      if key and _SECRET_PARAMS.fullmatch(key):
        return REDACTED
      for secret in self._secrets:
        value = value.replace(secret, REDACTED)
    return value

  def write(self) -> List[str]:
    """Writes the exchanges (pseudonymized if asked); returns the paths."""
    exchanges = self.exchanges
    if self.pseudonymize:
      exchanges = _Pseudonyms(exchanges).apply(exchanges)
    try:
      os.makedirs(self.directory, exist_ok=True)
    except OSError as e:
      raise UserError(f"--record_api: cannot make {self.directory}: "
                      f"{e.strerror}") from None
    paths = []
    for i, exchange in enumerate(exchanges, 1):
      path = os.path.join(self.directory, f"{i:04d}-{exchange['method']}.json")
      with open(path, "w", encoding="utf-8") as f:
        json.dump(exchange, f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")
      paths.append(path)
    return paths


class _Pseudonyms:
  """The blog names and uuids of a recording, each replaced the same way
  in every exchange."""

  def __init__(self, exchanges: List[dict]):
    # Imported here, only when a recording is pseudonymized: the corpus
    # package reports its own mistakes with the model package's UserError,
    # which the Tumblr layer never loads (tests/test_layout.py).
    # pylint: disable-next=import-outside-toplevel
    from bot.corpus import pseudonyms
    people = pseudonyms.People()
    self._uuids: Dict[str, str] = {}
    self._key = secrets.token_bytes(32)  # never written: no way back
    for exchange in exchanges:
      blog = _BLOG_PATH.match(exchange["path"])
      if blog:
        name = blog.group(1).split(".tumblr.com")[0]
        if not _UUID.match(name):
          people.add(name, name)
      self._collect(exchange, people)
    self._names = pseudonyms.Pseudonymizer(people, self._key, keep=())

  def _collect(self, value: Any, people, key: str = "") -> None:
    if isinstance(value, dict):
      for k, v in value.items():
        self._collect(v, people, k)
    elif isinstance(value, list):
      for v in value:
        self._collect(v, people, key)
    elif isinstance(value, str) and value:
      if _UUID.match(value):
        digest = hmac.new(self._key, value.encode(), hashlib.sha256)
        self._uuids[value] = "t:" + digest.hexdigest()[:22]
      elif _NAME_FIELDS.fullmatch(key) and re.fullmatch(r"[\w-]+", value):
        people.add(value, value)

  def apply(self, value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
      return {k: self.apply(v, k) for k, v in value.items()}
    if isinstance(value, list):
      return [self.apply(v, key) for v in value]
    if isinstance(value, str):
      if value in self._uuids:
        return self._uuids[value]
      if key == "path":
        return _BLOG_PATH.sub(lambda m: "/v2/blog/" + self._blog(m.group(1)),
                              value)
      if _NAME_FIELDS.fullmatch(key):
        return self._names.author(value)
      return self._names.text(value)
    return value

  def _blog(self, identifier: str) -> str:
    if identifier in self._uuids:
      return self._uuids[identifier]
    name, dot, rest = identifier.partition(".")
    return self._names.author(name) + dot + rest


def load(directory: str) -> List[dict]:
  """The exchanges of a recording, in the order they were made."""
  names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
  out = []
  for name in names:
    with open(os.path.join(directory, name), encoding="utf-8") as f:
      out.append(json.load(f))
  return out


class ReplayServer:
  """Answers each request with the next recorded exchange of the same
  method and path (its query and body are the caller's to check, in
  `received`); a request the recording does not have is a 404."""

  def __init__(self, exchanges: List[dict]):
    self._waiting = list(exchanges)
    self.received: List[dict] = []
    self._lock = threading.Lock()
    replay = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def _serve(self):
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        exchange = replay._next(self.command, path, query, body)
        status = exchange["status"] if exchange else 404
        data = json.dumps(exchange["body"] if exchange else {
            "meta": {"status": 404, "msg": "Not Found"},
            "response": []}).encode()
        self.send_response(status)
        for key, value in (exchange or {}).get("headers", {}).items():
          if key.lower() != "content-type":
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

      do_GET = do_POST = do_PUT = do_DELETE = _serve

      def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass

    self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self._thread = threading.Thread(target=self._httpd.serve_forever,
                                    daemon=True)

  def _next(self, method: str, path: str, query: str,
            body: bytes) -> Optional[dict]:
    with self._lock:
      self.received.append({
          "method": method, "path": path,
          "query": dict(urllib.parse.parse_qsl(query)),
          "body": json.loads(body) if body.startswith(b"{") else None})
      for i, exchange in enumerate(self._waiting):
        if (exchange["method"], exchange["path"]) == (method, path):
          return self._waiting.pop(i)
    return None

  @property
  def url(self) -> str:
    host, port = self._httpd.server_address[:2]
    return f"http://{host}:{port}"

  def __enter__(self) -> "ReplayServer":
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._httpd.shutdown()
    self._httpd.server_close()
    self._thread.join()
