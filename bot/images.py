"""Text in images: what a screenshot says goes into the prompt.

Most images on Tumblr have no alt text, so an ask with a screenshot would be
answered blind. `ImageReader.read(url)` fetches an image and reads its text
with RapidOCR (`rapidocr-onnxruntime`: a local ONNX model that ships in the
wheel; nothing is downloaded at run time), as the original did:
- only text read with high confidence (`min_confidence`, the original's
  0.95) is kept, and text in the outer 5% border of the image is ignored
  (watermarks, cropped lines);
- a GIF is sampled at about one frame a second, at most 10 frames, and the
  lines of its frames joined without repeats.
Results are cached in SQLite by URL and by a hash of the image's bytes, so a
second post with the same image is never read twice.

Fetching is careful: http(s) only, a size cap and a timeout, no redirect
that leaves the allowed hosts, and only from hosts matching `allowed_hosts`
(patterns like `*.media.tumblr.com` or `127.0.0.1:8080`); a host that
resolves to a private, loopback or link-local address is refused unless its
pattern names that address itself (the tests' local server).

`annotate(post, reader)` writes the text into a post's NPF image blocks
(`ocr_text`), which bot.tumblr.npf renders in the text format as
`[image: ALT | text: WHAT IT SAYS]` (or `[image | text: ...]` without alt
text), for the bot's prompts and for training documents alike.
"""

import dataclasses
import fnmatch
import hashlib
import io
import ipaddress
import logging
import socket
import sqlite3
import threading
import time
import urllib.parse
from typing import List, Optional, Sequence

import urllib3

from bot.tumblr import fields

log = logging.getLogger("bot.images")

TUMBLR_MEDIA_HOSTS = ("*.media.tumblr.com", "media.tumblr.com")
BORDER = 0.05  # the share of each side ignored
GIF_FRAMES = 10
GIF_FRAME_MS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS image_text (
  url TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  text TEXT NOT NULL,
  t REAL NOT NULL,
  PRIMARY KEY (url, sha256)
);
CREATE INDEX IF NOT EXISTS image_text_sha ON image_text (sha256);
"""

_ENGINE = []
_ENGINE_LOCK = threading.Lock()
ocr_runs = 0  # images read by the engine in this process (tests count them)


class Refused(Exception):
  """An image the reader will not fetch (the reason is the message)."""


def available() -> bool:
  """Whether the OCR engine is installed (`pip install -e ".[ocr]"`)."""
  try:
    import rapidocr_onnxruntime  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def _engine():
  with _ENGINE_LOCK:
    if not _ENGINE:
      from rapidocr_onnxruntime import RapidOCR  # pylint: disable=import-outside-toplevel
      _ENGINE.append(RapidOCR())
    return _ENGINE[0]


def _frames(data: bytes) -> list:
  """RGB frames to read: the image, or a GIF's frames about a second apart."""
  from PIL import Image, ImageSequence  # pylint: disable=import-outside-toplevel
  image = Image.open(io.BytesIO(data))
  if not getattr(image, "is_animated", False):
    return [image.convert("RGB")]
  frames, elapsed, next_at = [], 0, 0
  for frame in ImageSequence.Iterator(image):
    if elapsed >= next_at:
      frames.append(frame.convert("RGB"))
      next_at += GIF_FRAME_MS
      if len(frames) == GIF_FRAMES:
        break
    elapsed += int(frame.info.get("duration") or 100)
  return frames


def read_text(data: bytes, min_confidence: float = 0.95) -> str:
  """The text an image (or GIF) shows, one line of the image a line."""
  global ocr_runs  # pylint: disable=global-statement
  import numpy as np  # pylint: disable=import-outside-toplevel
  lines: List[str] = []
  for frame in _frames(data):
    ocr_runs += 1
    width, height = frame.size
    result, _ = _engine()(np.asarray(frame)[:, :, ::-1])  # BGR, as cv2's
    boxes = []
    for box, text, confidence in result or []:
      xs, ys = [p[0] for p in box], [p[1] for p in box]
      cx, cy = sum(xs) / len(xs), sum(ys) / len(ys)
      if float(confidence) < min_confidence:
        continue
      if not (BORDER * width <= cx <= (1 - BORDER) * width
              and BORDER * height <= cy <= (1 - BORDER) * height):
        continue
      boxes.append((round(min(ys) / 8), min(xs), text.strip()))
    for _, _, text in sorted(boxes):
      if text and text not in lines:
        lines.append(text)
  return "\n".join(lines)


def _host_allowed(url: str, patterns: Sequence[str]) -> List[str]:
  """The addresses to fetch `url` from (IPv4 first): its host resolved once,
  allowed by a pattern and checked; raises Refused otherwise. The fetch
  connects to these (resolving again could answer others: DNS rebinding)."""
  parts = urllib.parse.urlsplit(url)
  if parts.scheme not in ("http", "https") or not parts.hostname:
    raise Refused(f"not an http(s) URL: {url[:80]}")
  host = parts.hostname.lower()
  port = parts.port or (443 if parts.scheme == "https" else 80)
  pattern = next((p for p in patterns
                  if fnmatch.fnmatch(f"{host}:{port}", p.lower())
                  or (":" not in p and fnmatch.fnmatch(host, p.lower()))),
                 None)
  if pattern is None:
    raise Refused(f"{host}:{port} is not an allowed image host")
  named = pattern.split(":")[0]
  try:
    addresses = {ai[4][0] for ai in socket.getaddrinfo(host, port)}
  except OSError as e:
    raise Refused(f"cannot resolve {host}: {e}") from None
  for address in sorted(addresses):
    ip = ipaddress.ip_address(address.split("%")[0])
    if (ip.is_private or ip.is_loopback or ip.is_link_local
        or ip.is_reserved or ip.is_unspecified or ip.is_multicast):
      if named != address:
        raise Refused(f"{host} resolves to a private address ({address})")
  return sorted(addresses, key=lambda a: (":" in a, a))


def _get(url: str, address: str, timeout_s: float):
  """GET `url` from `address` (its host's checked address), the request
  and, for https, TLS (SNI and the certificate) still for the host name."""
  parts = urllib.parse.urlsplit(url)
  https = parts.scheme == "https"
  port = parts.port or (443 if https else 80)
  if https:
    import certifi  # pylint: disable=import-outside-toplevel
    pool = urllib3.HTTPSConnectionPool(
        address, port, timeout=timeout_s, retries=False,
        cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(),
        server_hostname=parts.hostname, assert_hostname=parts.hostname)
  else:
    pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout_s,
                                      retries=False)
  path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
  return pool.urlopen("GET", path, redirect=False, preload_content=False,
                      headers={"Host": parts.netloc.rpartition("@")[2],
                               "User-Agent": "tumblr-gpt2-jax-bot/0.1"})


@dataclasses.dataclass
class ImageReader:
  """Reads images' text with a cache in the SQLite file `cache_path`."""
  cache_path: str
  allowed_hosts: Sequence[str] = TUMBLR_MEDIA_HOSTS
  max_bytes: int = 10 * 2**20
  timeout_s: float = 15.0
  min_confidence: float = 0.95

  def __post_init__(self):
    self._db = sqlite3.connect(self.cache_path, timeout=30,
                               check_same_thread=False)
    self._db.executescript(_SCHEMA)
    self._lock = threading.Lock()

  def close(self) -> None:
    self._db.close()

  def read(self, url: str) -> str:
    """The text of the image at `url` ("" if it has none, or cannot be
    fetched: the reason is logged)."""
    with self._lock:
      row = self._db.execute("SELECT text FROM image_text WHERE url = ? "
                             "ORDER BY t DESC LIMIT 1", (url,)).fetchone()
    if row is not None:
      return row[0]
    try:
      data = self.fetch(url)
    except Refused as e:
      log.warning("image not read: %s", e)
      return ""
    digest = hashlib.sha256(data).hexdigest()
    with self._lock:
      row = self._db.execute("SELECT text FROM image_text WHERE sha256 = ? "
                             "LIMIT 1", (digest,)).fetchone()
    if row is not None:
      text = row[0]
    else:
      try:
        text = read_text(data, self.min_confidence)
      except Exception as e:  # pylint: disable=broad-except
        log.warning("image %s not read: %s: %s", url[:80],
                    type(e).__name__, e)
        return ""
    with self._lock, self._db:
      self._db.execute("INSERT OR REPLACE INTO image_text (url, sha256, "
                       "text, t) VALUES (?, ?, ?, ?)",
                       (url, digest, text, time.time()))
    return text

  def fetch(self, url: str, redirects: int = 3) -> bytes:
    """The image's bytes, within the limits; raises Refused."""
    for _ in range(redirects + 1):
      resp, failure = None, None
      for address in _host_allowed(url, self.allowed_hosts):
        try:
          resp = _get(url, address, self.timeout_s)
          break
        except (urllib3.exceptions.HTTPError, OSError) as e:
          failure = e  # the next address, if the host has another
      if resp is None:
        raise Refused(f"cannot fetch {url[:80]}: {type(failure).__name__}")
      try:
        if resp.status in (301, 302, 303, 307, 308):
          url = urllib.parse.urljoin(url, resp.headers.get("Location", ""))
          continue
        if resp.status != 200:
          raise Refused(f"{url[:80]} answered {resp.status}")
        size = int(resp.headers.get("Content-Length") or 0)
        if size > self.max_bytes:
          raise Refused(f"{url[:80]} is {size} bytes (over {self.max_bytes})")
        data = b""
        try:
          for chunk in resp.stream(65536):
            data += chunk
            if len(data) > self.max_bytes:
              raise Refused(f"{url[:80]} is over {self.max_bytes} bytes")
        except (urllib3.exceptions.HTTPError, OSError) as e:
          raise Refused(f"cannot fetch {url[:80]}: "
                        f"{type(e).__name__}") from None
        return data
      finally:
        resp.release_conn()
    raise Refused(f"{url[:80]}: too many redirects")


def image_url(block: dict) -> str:
  """The URL of an NPF image block's media to read: the smallest at least
  640 pixels wide (or the widest there is)."""
  media = [m for m in fields.dicts(block.get("media")) if m.get("url")]
  if not media:
    return ""
  width = lambda m: fields.integer(m.get("width")) or 0
  wide = [m for m in media if width(m) >= 640]
  return str(min(wide, key=width)["url"] if wide
             else max(media, key=width)["url"])


def annotate(post: dict, reader: Optional[ImageReader]) -> dict:
  """Writes each image's text into the post's NPF image blocks
  (`ocr_text`), in its content and its trail; returns the post."""
  if reader is None:
    return post
  blocks = list(fields.dicts(post.get("content")))
  for item in fields.dicts(post.get("trail")):
    blocks += fields.dicts(item.get("content"))
  for block in blocks:
    if block.get("type") == "image" and "ocr_text" not in block:
      url = image_url(block)
      if url:
        block["ocr_text"] = reader.read(url)
  return post


def reader_from_config(config) -> Optional[ImageReader]:
  """The bot's reader (config keys `images.*`), or None with OCR off. With
  OCR on but the engine missing, says so once and reads nothing."""
  c = config.images
  if not c.ocr:
    return None
  if not available():
    log.warning("images.ocr is on, but rapidocr-onnxruntime is not installed"
                " (pip install -e \".[ocr]\"): images are read by their alt "
                "text only")
    return None
  hosts = [h.strip() for h in str(c.allowed_hosts).split(",") if h.strip()]
  return ImageReader(config.state, hosts, int(c.max_bytes),
                     float(c.timeout_s), float(c.min_confidence))
