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

Reading a stranger's image is careful, and one image never fails a pass:
- fetching: http(s) only, from hosts matching `allowed_hosts` (patterns like
  `*.media.tumblr.com`, which allows only the scheme's default port, or
  `127.0.0.1:8080`, only that port); the host is resolved once and must be
  a global unicast address, unless its pattern names that address itself
  (the tests' local server); a size cap, a timeout, no redirect that leaves
  the allowed hosts;
- only PNG, JPEG, GIF and WebP, served with an image Content-Type that
  agrees with the bytes (Pillow opens no other format);
- an image over `max_pixels` (from its header, before decoding) is
  refused; an animation is read no further than FRAMES_READ frames, a frame
  over `max_pixels` or DECODE_BUDGET frames' worth of `max_pixels`;
- `ImageReader.read` never raises: an image it cannot or will not read
  (a bad URL, a refusal, a network or decode error, anything else) reads
  as "" (the post keeps its alt text), with the reason logged in one line
  that shows no query string or user name.

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
import re
import socket
import sqlite3
import threading
import time
import urllib.parse
from typing import Iterator, List, Optional, Sequence, Tuple

import urllib3

from bot.tumblr import fields
from gpt2.errors import UserError

log = logging.getLogger("bot.images")

TUMBLR_MEDIA_HOSTS = ("*.media.tumblr.com", "media.tumblr.com")
BORDER = 0.05  # the share of each side ignored
GIF_FRAMES = 10
GIF_FRAME_MS = 1000
# The formats read (Pillow's names) and the Content-Types each is served as.
FORMATS = {"PNG": ("image/png",), "JPEG": ("image/jpeg", "image/jpg",
                                            "image/pjpeg"),
           "GIF": ("image/gif",), "WEBP": ("image/webp",)}
# A frame's pixels at most, checked from its header before it is decoded
# (Pillow's own limit, Image.MAX_IMAGE_PIXELS, is 89 M and only warns).
MAX_PIXELS = 4096 * 4096
# An animation's frames decoded at most (GIF_FRAMES of them are read), and
# its decoded pixels at most, in frames of `max_pixels`: ten 4000x4000
# frames compress to 130 KB.
FRAMES_READ = 100
DECODE_BUDGET = 4

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


def _sniff(data: bytes) -> Optional[str]:
  """The format of an image's bytes, if one of FORMATS (as Pillow tells)."""
  if data.startswith(b"\x89PNG\r\n\x1a\n"):
    return "PNG"
  if data.startswith(b"\xff\xd8\xff"):
    return "JPEG"
  if data[:6] in (b"GIF87a", b"GIF89a"):
    return "GIF"
  if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
    return "WEBP"
  return None


def _frames(data: bytes, max_pixels: int = MAX_PIXELS) -> Iterator:
  """Yields the RGB frames to read: the image, or an animation's frames
  about a second apart (GIF_FRAMES at most). Raises Refused for bytes that
  are not one of FORMATS or a first frame over `max_pixels`; an animation
  is read no further than FRAMES_READ frames, a frame over `max_pixels` or
  DECODE_BUDGET frames' worth of pixels."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  kind = _sniff(data)
  if kind is None:
    raise Refused("not a PNG, JPEG, GIF or WebP image")
  try:
    # Only that format's plugin looks at the bytes (no EPS, which would
    # start Ghostscript). Opening reads the header only: nothing decoded.
    image = Image.open(io.BytesIO(data), formats=[kind])
  except Image.DecompressionBombError:
    raise Refused(f"the image is over {max_pixels} pixels") from None
  width, height = image.size
  if width * height > max_pixels:
    raise Refused(f"the image is {width}x{height}, over {max_pixels} pixels")
  if not getattr(image, "is_animated", False):
    yield image.convert("RGB")
    return
  budget = DECODE_BUDGET * max_pixels
  kept, elapsed, next_at = 0, 0, 0
  for index in range(FRAMES_READ):
    try:
      # Seeking reads the frame's header (a GIF frame may grow the canvas)
      # and decodes the frame before it, which the budget has counted.
      image.seek(index)
    except (EOFError, Image.DecompressionBombError):
      return
    pixels = image.size[0] * image.size[1]
    if pixels > max_pixels or pixels > budget:
      return
    budget -= pixels
    if elapsed >= next_at:
      yield image.convert("RGB")
      kept += 1
      next_at += GIF_FRAME_MS
      if kept == GIF_FRAMES:
        return
    elapsed += int(image.info.get("duration") or 100)


def read_text(data: bytes, min_confidence: float = 0.95,
              max_pixels: int = MAX_PIXELS) -> str:
  """The text an image (or GIF) shows, one line of the image a line.
  Raises Refused for an image `_frames` will not read."""
  global ocr_runs  # pylint: disable=global-statement
  import numpy as np  # pylint: disable=import-outside-toplevel
  lines: List[str] = []
  for frame in _frames(data, max_pixels):
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


def _shown(url: str) -> str:
  """`url` as a log may show it: without a query, a fragment or a user name
  and password (where a signed URL would keep its secret), on one line."""
  head = re.split(r"[?#]", str(url), maxsplit=1)[0]
  head = re.sub(r"^([^:/?#]*://)[^/]*@", r"\1", head)
  head = re.sub(r"[\x00-\x1f\x7f]", "?", head)
  return head[:100] + ("..." if len(head) > 100 else "")


def _one_line(message: str) -> str:
  """An error's message for the log: one line, no query strings or user
  names (an exception may quote the URL it failed on)."""
  message = re.sub(r"\?[^\s'\"]*", "?...", str(message))
  message = re.sub(r"//[^/\s@'\"]*@", "//", message)
  return re.sub(r"\s+", " ", message).strip()[:300]


def _pattern(pattern: str) -> Tuple[str, Optional[int]]:
  """An allowed-host pattern as (host glob, port or None): `host`,
  `host:port`, `[v6 address]` or `[v6 address]:port`. Raises UserError for
  a port that is not a number from 1 to 65535."""
  text = pattern.strip().lower()
  if text.startswith("["):
    host, _, port = text[1:].partition("]")
    if port and not port.startswith(":"):
      raise UserError(f"image host pattern {pattern!r}: not host, "
                      "host:port, [address] or [address]:port")
    port = port[1:]
  elif text.count(":") == 1:
    host, _, port = text.partition(":")
  else:
    host, port = text, ""  # no port (or a bare IPv6 address)
  if not port:
    return host, None
  if not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
    raise UserError(f"image host pattern {pattern!r}: the port is not a "
                    "number from 1 to 65535")
  return host, int(port)


def _allowed_address(ip) -> bool:
  """Whether `ip` is a global unicast address (for IPv6, with any IPv4
  address it embeds global too): not private, loopback, link-local, shared
  (100.64.0.0/10), documentation, multicast, reserved or unspecified."""
  if ip.version == 6:
    embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo or (None,))[-1]
    if embedded is not None and not _allowed_address(embedded):
      return False
  return ip.is_global and not (ip.is_multicast or ip.is_reserved
                               or ip.is_unspecified)


def _host_allowed(url: str, patterns: Sequence[str]) -> List[str]:
  """The addresses to fetch `url` from (IPv4 first): its host resolved once,
  allowed by a pattern and checked; raises Refused otherwise. The fetch
  connects to these (resolving again could answer others: DNS rebinding).
  A pattern without a port allows the scheme's default port only."""
  try:
    parts = urllib.parse.urlsplit(url)
    port = parts.port
  except ValueError as e:  # "Invalid IPv6 URL", "Port out of range ..."
    raise Refused(f"not a valid URL ({_one_line(e)}): {_shown(url)}") from None
  if parts.scheme not in ("http", "https") or not parts.hostname:
    raise Refused(f"not an http(s) URL: {_shown(url)}")
  host = parts.hostname.lower()
  default = 443 if parts.scheme == "https" else 80
  port = port or default
  named = next((glob for glob, allowed in map(_pattern, patterns)
                if fnmatch.fnmatchcase(host, glob)
                and port == (allowed or default)), None)
  if named is None:
    raise Refused(f"{host}:{port} is not an allowed image host")
  try:
    addresses = {ai[4][0] for ai in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM)}
  except (OSError, UnicodeError) as e:
    raise Refused(f"cannot resolve {host}: {_one_line(e)}") from None
  for address in sorted(addresses):
    ip = ipaddress.ip_address(address.split("%")[0])
    # Only a pattern that names the address itself lets a non-global one
    # in (the tests' 127.0.0.1:PORT); "*" or a name never does.
    if not _allowed_address(ip) and named != address:
      raise Refused(f"{host} resolves to a non-global address ({address})")
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
  """Reads images' text with a cache in the SQLite file `cache_path`.
  Raises UserError for an `allowed_hosts` pattern with a bad port."""
  cache_path: str
  allowed_hosts: Sequence[str] = TUMBLR_MEDIA_HOSTS
  max_bytes: int = 10 * 2**20
  timeout_s: float = 15.0
  min_confidence: float = 0.95
  max_pixels: int = MAX_PIXELS

  def __post_init__(self):
    for pattern in self.allowed_hosts:
      _pattern(pattern)  # a bad one is said at the start, not per image
    self._db = sqlite3.connect(self.cache_path, timeout=30,
                               check_same_thread=False)
    self._db.executescript(_SCHEMA)
    self._lock = threading.Lock()

  def close(self) -> None:
    self._db.close()

  def read(self, url: str) -> str:
    """The text of the image at `url`: "" if it has none, or if it cannot
    or will not be read (the reason is logged). Never raises: an image's
    failure, whatever it is, is that image's, and its post goes on with
    its alt text."""
    try:
      return self._read(url)
    except Refused as e:
      reason = _one_line(e)
      if _shown(url) in reason:  # it names the URL already
        log.warning("image not read: %s", reason)
      else:
        log.warning("image %s not read: %s", _shown(url), reason)
    except Exception as e:  # pylint: disable=broad-except
      log.warning("image %s not read: %s: %s", _shown(url),
                  type(e).__name__, _one_line(e))
    return ""

  def _read(self, url: str) -> str:
    with self._lock:
      row = self._db.execute("SELECT text FROM image_text WHERE url = ? "
                             "ORDER BY t DESC LIMIT 1", (url,)).fetchone()
    if row is not None:
      return row[0]
    data = self.fetch(url)
    digest = hashlib.sha256(data).hexdigest()
    with self._lock:
      row = self._db.execute("SELECT text FROM image_text WHERE sha256 = ? "
                             "LIMIT 1", (digest,)).fetchone()
    text = (row[0] if row is not None
            else read_text(data, self.min_confidence, self.max_pixels))
    try:
      with self._lock, self._db:
        self._db.execute("INSERT OR REPLACE INTO image_text (url, sha256, "
                         "text, t) VALUES (?, ?, ?, ?)",
                         (url, digest, text, time.time()))
    except sqlite3.Error as e:  # the text is still good for this post
      log.warning("image %s: its text not cached: %s", _shown(url),
                  _one_line(e))
    return text

  def fetch(self, url: str, redirects: int = 3) -> bytes:
    """The image's bytes, within the limits; raises Refused (for anything
    the server or the network does wrong, too)."""
    for _ in range(redirects + 1):
      resp, failure = None, None
      for address in _host_allowed(url, self.allowed_hosts):
        try:
          resp = _get(url, address, self.timeout_s)
          break
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
          failure = e  # the next address, if the host has another
      if resp is None:
        raise Refused(f"cannot fetch {_shown(url)}: "
                      f"{type(failure).__name__}")
      try:
        if resp.status in (301, 302, 303, 307, 308):
          location = resp.headers.get("Location", "")
          try:
            target = urllib.parse.urljoin(url, location) if location else ""
          except ValueError:  # "Invalid IPv6 URL"; a bad port fails later
            target = ""
          if not target:
            raise Refused(f"{_shown(url)} redirects to a bad Location "
                          f"({_shown(location)})")
          url = target
          continue
        if resp.status != 200:
          raise Refused(f"{_shown(url)} answered {resp.status}")
        kind = self._content_type(url, resp)
        size = resp.headers.get("Content-Length") or "0"
        if not re.fullmatch(r"[0-9]+", size.strip()):
          raise Refused(f"{_shown(url)} has a bad Content-Length "
                        f"({_one_line(size)[:20]})")
        if int(size) > self.max_bytes:
          raise Refused(f"{_shown(url)} is {int(size)} bytes (over "
                        f"{self.max_bytes})")
        data = b""
        try:
          for chunk in resp.stream(65536):
            data += chunk
            if len(data) > self.max_bytes:
              raise Refused(f"{_shown(url)} is over {self.max_bytes} bytes")
        except (urllib3.exceptions.HTTPError, OSError) as e:
          raise Refused(f"cannot fetch {_shown(url)}: "
                        f"{type(e).__name__}") from None
        found = _sniff(data)
        if found is None:
          raise Refused(f"{_shown(url)} is not a PNG, JPEG, GIF or WebP "
                        "image")
        if kind not in FORMATS[found]:
          raise Refused(f"{_shown(url)} is a {found} served as {kind}")
        return data
      finally:
        resp.release_conn()
    raise Refused(f"{_shown(url)}: too many redirects")

  @staticmethod
  def _content_type(url: str, resp) -> str:
    """The response's Content-Type (lower case, no parameters); raises
    Refused unless it is an image type of FORMATS."""
    kind = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not any(kind in types for types in FORMATS.values()):
      shown = _one_line(kind)[:40] or "no Content-Type"
      raise Refused(f"{_shown(url)} is served as {shown}, not as a PNG, "
                    "JPEG, GIF or WebP image")
    return kind


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
