"""Text in images: OCR into the prompt, the cache, and where images may come
from. Images are drawn here with Pillow and served by the local Tumblr
server's media path."""

import contextlib
import http.server
import io
import logging
import socket
import threading
import time

import pytest
from PIL import Image, ImageDraw, ImageFont

from bot import images, loop
from bot.state import Trace
from bot.tumblr import html_subset, npf
from gpt2.errors import UserError
from tests import bot_loop_helpers as helpers
# pylint: disable-next=unused-import
from tests.bot_loop_helpers import credentials_env, server  # fixtures
from tests.bot_loop_helpers import make_config, start_server

BOT = helpers.BOT
SENTENCE = "the frogs are singing tonight"


def drawn(lines, size=(640, 200), at=((40, 80),), frames=None) -> bytes:
  """A PNG (or, with `frames`, a GIF) with black words on white."""
  font = ImageFont.load_default(size=28)

  def one(text_lines):
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for text, xy in zip(text_lines, at):
      draw.text(xy, text, fill="black", font=font)
    return image
  buf = io.BytesIO()
  if frames is None:
    one(lines).save(buf, "PNG")
  else:
    pictures = [one(f) for f in frames]
    pictures[0].save(buf, "GIF", save_all=True, append_images=pictures[1:],
                     duration=1000, loop=0)
  return buf.getvalue()


def host(server) -> str:
  return server.url.split("//")[1]


def image_ask(server, url, question="what does this say?", asker="alice",
              alt_text=None):
  image = {"type": "image", "media": [{"url": url, "type": "image/png",
                                       "width": 640, "height": 200}]}
  if alt_text:
    image["alt_text"] = alt_text
  content = [{"type": "text", "text": question}, image]
  return server.add_post(BOT, content, layout=[{
      "type": "ask", "blocks": [0, 1], "attribution": {
          "type": "blog", "blog": {"name": asker}}}], state="submission")


def test_the_text_in_an_image_reaches_the_prompt_once(server, tmp_path,
                                                      bot_model):
  """And an image that cannot be read (here a URL that is not one) leaves
  its post to its alt text: that ask is answered, and so is the next pass's
  ask."""
  server.media["frogs.png"] = ("image/png", drawn([SENTENCE]))
  url = f"{server.url}/media/frogs.png"
  first = image_ask(server, url)
  bad = image_ask(server, "http://[bad/x.png", "and what is this?", "carol",
                  alt_text="a frog on a leaf")
  cfg = make_config(server, tmp_path)
  cfg.images.allowed_hosts = host(server)
  cfg.choice.min_chars = 1
  runs = images.ocr_runs
  report = loop.run_pass(cfg, model=bot_model)
  assert images.ocr_runs == runs + 1
  assert f"ask:{bad}" in report.published
  (entry,) = [e for e in Trace(cfg.state + ".trace.jsonl").read()
              if e.get("job") == f"ask:{bad}"]
  assert "[image: a frog on a leaf]" in entry["prompt"]
  (entry,) = [e for e in Trace(cfg.state + ".trace.jsonl").read()
              if e.get("job") == f"ask:{first}"]
  match = next(line for line in entry["prompt"].splitlines()
               if line.startswith("[image"))
  assert match.startswith("[image | text: ")
  words = SENTENCE.split()
  assert sum(w in match for w in words) >= len(words) - 1, match
  # The same image in another ask: read from the cache, not again.
  second = image_ask(server, url, "and this one?", "bob")
  report = loop.run_pass(cfg, model=bot_model)
  assert images.ocr_runs == runs + 1
  assert report.published == [f"ask:{second}"]
  (entry,) = [e for e in Trace(cfg.state + ".trace.jsonl").read()
              if e.get("job") == f"ask:{second}"]
  assert match in entry["prompt"]


def test_only_allowed_hosts_and_never_a_private_address(tmp_path):
  with start_server() as a, start_server() as b:
    a.media["x.png"] = b.media["x.png"] = ("image/png", drawn([SENTENCE]))
    reader = images.ImageReader(str(tmp_path / "cache.db"), [host(a)])
    assert reader.fetch(f"{a.url}/media/x.png")[:4] == b"\x89PNG"
    for url, why in ((f"{b.url}/media/x.png", "not an allowed image host"),
                     ("ftp://64.media.tumblr.com/x.png", r"not an http\(s\)"),
                     ("http://localhost/x.png", "not an allowed image host")):
      with pytest.raises(images.Refused, match=why):
        reader.fetch(url)
    # A pattern that lets any host in still never reaches a loopback
    # address it does not name.
    port = host(a).rpartition(":")[2]
    anywhere = images.ImageReader(str(tmp_path / "cache2.db"), [f"*:{port}"])
    with pytest.raises(images.Refused, match="non-global address"):
      anywhere.fetch(f"{a.url}/media/x.png")
    assert anywhere.read(f"{a.url}/media/x.png") == ""  # logged, not read
    small = images.ImageReader(str(tmp_path / "cache3.db"), [host(a)],
                               max_bytes=100)
    with pytest.raises(images.Refused, match="over 100"):
      small.fetch(f"{a.url}/media/x.png")


def test_the_fetch_connects_to_the_address_it_checked(tmp_path, monkeypatch):
  """A name that answers a public address when checked and 127.0.0.1 when
  asked again (DNS rebinding) is resolved once: the fetch connects to the
  address that passed the check, never to what a second answer says. No
  connection is made: the connect is recorded and refused here."""
  import urllib3.util.connection  # pylint: disable=import-outside-toplevel
  real = socket.getaddrinfo
  answers = ["93.184.215.14", "127.0.0.1"]  # public, then loopback
  asked, connects = [], []

  def rebinding(host, port, *args, **kw):
    if host != "rebind.example":
      return real(host, port, *args, **kw)
    asked.append(host)
    address = answers[min(len(asked), len(answers)) - 1]
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

  def refuse(address, *args, **kw):
    connects.append(address[0])
    raise ConnectionRefusedError("the test makes no connection")

  monkeypatch.setattr(socket, "getaddrinfo", rebinding)
  monkeypatch.setattr(urllib3.util.connection, "create_connection", refuse)
  reader = images.ImageReader(str(tmp_path / "cache.db"), ["rebind.example"])
  with pytest.raises(images.Refused, match="cannot fetch"):
    reader.fetch("http://rebind.example/x.png")
  assert asked == ["rebind.example"] and connects == ["93.184.215.14"]


@pytest.mark.slow
def test_low_confidence_and_border_text_is_dropped_and_gifs_are_sampled():
  border = drawn(["edge", SENTENCE], size=(1000, 500),
                 at=((2, 2), (60, 220)))
  text = images.read_text(border)
  assert "frogs" in text and "edge" not in text
  gif = drawn(None, frames=[["first frame words"], ["second frame words"],
                            ["first frame words"]])
  lines = images.read_text(gif).splitlines()
  assert any("first" in line for line in lines)
  assert any("second" in line for line in lines)
  assert len(lines) == 2  # a line seen twice is kept once
  assert images.read_text(drawn([SENTENCE]), min_confidence=1.01) == ""


def test_the_image_syntax_in_the_text_format():
  block = {"type": "image", "alt_text": "a cat", "ocr_text": "hello\nworld",
           "media": [{"url": "https://64.media.tumblr.com/a.png"}]}
  (placeholder,) = npf.content_block_to_blocks(block)
  assert placeholder.text == "[image: a cat | text: hello / world]"
  assert html_subset.is_placeholder(placeholder)
  block.pop("alt_text")
  (placeholder,) = npf.content_block_to_blocks(block)
  assert placeholder.text == "[image | text: hello / world]"
  # Media are chosen at least 640 wide when there is such a size.
  block["media"] = [{"url": "s", "width": 250}, {"url": "m", "width": 640},
                    {"url": "l", "width": 1280}]
  assert images.image_url(block) == "m"


# ---- what the reader refuses, and that refusing never raises ----------------


@contextlib.contextmanager
def web(routes):
  """A local HTTP server on 127.0.0.1 answering GET PATH (the query is
  ignored) from `routes`: {path: (status, [(header, value)], body, delay)},
  as a careless or hostile media host might."""

  class Handler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):  # pylint: disable=invalid-name
      route = routes.get(self.path.partition("?")[0])
      if route is None:
        self.send_error(404)
        return
      status, headers, body, delay = route
      time.sleep(delay)
      try:
        self.send_response(status)
        for name, value in headers:
          self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
      except OSError:
        pass  # the reader gave up waiting (the timeout's route)

    def log_message(self, *args):  # pylint: disable=arguments-differ
      pass

  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  httpd.daemon_threads = True
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  try:
    yield f"127.0.0.1:{httpd.server_address[1]}"
  finally:
    httpd.shutdown()
    httpd.server_close()


def served(kind, body, delay=0.0):
  return (200, [("Content-Type", kind), ("Content-Length", str(len(body)))],
          body, delay)


def encoded(image, fmt, **kw) -> bytes:
  buf = io.BytesIO()
  image.save(buf, fmt, **kw)
  return buf.getvalue()


def reasons(caplog) -> str:
  """What the reader logged, a line an image."""
  lines = [r.getMessage() for r in caplog.records if r.name == "bot.images"]
  assert all("\n" not in line for line in lines)
  return "\n".join(lines)


def closed_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_a_bad_url_or_a_bad_answer_is_that_images_and_never_raises(
    tmp_path, caplog):
  """Each of these read as "" (the post keeps its alt text), with its reason
  logged on one line, showing no query string or password."""
  caplog.set_level(logging.WARNING, "bot.images")
  png = drawn(["hi"], size=(64, 32))
  with web({"/length.png": (200, [("Content-Type", "image/png"),
                                  ("Content-Length", "abc")], png, 0),
            "/v6.png": (302, [("Location", "http://[bad/x.png?t=SECRET")],
                        b"", 0),
            "/port.png": (302, [("Location", "http://127.0.0.1:99999/x")],
                          b"", 0),
            "/nowhere.png": (302, [], b"", 0),
            "/slow.png": served("image/png", png, delay=1.0),
            "/cut.png": served("image/png", png[:80])}) as at:
    closed = closed_port()
    reader = images.ImageReader(str(tmp_path / "cache.db"),
                                [at, f"127.0.0.1:{closed}"], timeout_s=0.3)
    runs = images.ocr_runs
    cases = (("http://[bad/x.png?sig=SECRET", "not a valid URL"),
             ("http://64.media.tumblr.com:99999/x.png", "not a valid URL"),
             (f"http://{at}/length.png", "bad Content-Length"),
             (f"http://{at}/v6.png", "bad Location"),
             (f"http://{at}/port.png", "not a valid URL"),
             (f"http://{at}/nowhere.png", "bad Location"),
             (f"http://127.0.0.1:{closed}/x.png", "cannot fetch"),
             (f"http://user:SECRET@{at}/slow.png?sig=SECRET",
              "cannot fetch .*Timeout"),
             (f"http://{at}/cut.png", "OSError: .*truncated"))
    for url, why in cases:
      caplog.clear()
      assert reader.read(url) == "", url
      assert len(caplog.records) == 1
      assert why.split(" .*")[0] in reasons(caplog), (url, reasons(caplog))
      if ".*" in why:
        assert why.split(".*")[1] in reasons(caplog)
      assert "SECRET" not in caplog.text
  assert images.ocr_runs == runs  # nothing above reached the OCR


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path,
                                                              caplog):
  """36 M pixels in 5 KB: refused from the header (the OCR never runs); an
  animation's frames stop at a frame over the cap, at the pixel budget and
  at FRAMES_READ frames."""
  caplog.set_level(logging.WARNING, "bot.images")
  bomb_png = encoded(Image.new("1", (6000, 6000)), "PNG")
  bomb_gif = encoded(Image.new("P", (6000, 6000)), "GIF")
  assert len(bomb_png) < 10_000 and len(bomb_gif) < 50_000
  runs = images.ocr_runs
  with web({"/bomb.png": served("image/png", bomb_png),
            "/bomb.gif": served("image/gif", bomb_gif)}) as at:
    reader = images.ImageReader(str(tmp_path / "cache.db"), [at])
    for name in ("bomb.png", "bomb.gif"):
      caplog.clear()
      started = time.monotonic()
      assert reader.read(f"http://{at}/{name}") == ""
      assert "is 6000x6000, over 16777216 pixels" in reasons(caplog)
      assert time.monotonic() - started < 5.0  # decoding: half a minute
  assert images.ocr_runs == runs

  def frames(image_list, **kw):
    return encoded(image_list[0], "GIF", save_all=True, loop=0,
                   append_images=image_list[1:], **kw)

  def colours(n, size):
    return [Image.new("L", size, i % 250) for i in range(n)]

  # A second frame that grows the canvas to 6000x6000: the first is read.
  gif = bytearray(frames(colours(2, (10, 10)), duration=1000))
  second = gif.index(b"\x2c\0\0\0\0\x0a\0\x0a\0", gif.index(b"\x2c") + 1)
  gif[second + 5:second + 9] = (6000).to_bytes(2, "little") * 2
  assert len(list(images._frames(bytes(gif)))) == 1  # pylint: disable=protected-access
  # 30 frames a second apart, each the cap: DECODE_BUDGET of them.
  gif = frames(colours(30, (100, 100)), duration=1000)
  assert len(list(images._frames(gif, max_pixels=100 * 100))) == (  # pylint: disable=protected-access
      images.DECODE_BUDGET)
  # 150 frames 20 ms apart: the frames read are 0 and 50 of the first 100.
  gif = frames(colours(150, (10, 10)), duration=20)
  assert len(list(images._frames(gif))) == 2  # pylint: disable=protected-access


def test_only_png_jpeg_gif_and_webp_served_as_what_they_are(tmp_path):
  picture = Image.new("RGB", (20, 20), "white")
  png = encoded(picture, "PNG")
  bodies = {"png": png, "jpg": encoded(picture, "JPEG"),
            "gif": encoded(picture, "GIF"), "webp": encoded(picture, "WEBP"),
            "bmp": encoded(picture, "BMP"), "eps": encoded(picture, "EPS")}
  routes = {"/png": served("image/png", png),
            "/png-charset": served("image/PNG; charset=binary", png),
            "/jpg": served("image/jpeg", bodies["jpg"]),
            "/gif": served("image/gif", bodies["gif"]),
            "/webp": served("image/webp", bodies["webp"]),
            "/bmp": served("image/bmp", bodies["bmp"]),
            "/bmp-as-png": served("image/png", bodies["bmp"]),
            "/eps-as-jpeg": served("image/jpeg", bodies["eps"]),
            "/html": served("text/html", png),
            "/untyped": (200, [], png, 0),
            "/png-as-gif": served("image/gif", png)}
  with web(routes) as at:
    reader = images.ImageReader(str(tmp_path / "cache.db"), [at])
    for name, body in (("png", "png"), ("png-charset", "png"),
                       ("jpg", "jpg"), ("gif", "gif"), ("webp", "webp")):
      assert reader.fetch(f"http://{at}/{name}") == bodies[body]
    for name, why in (("bmp", "served as image/bmp, not as"),
                      ("bmp-as-png", "not a PNG, JPEG, GIF or WebP"),
                      ("eps-as-jpeg", "not a PNG, JPEG, GIF or WebP"),
                      ("html", "served as text/html, not as"),
                      ("untyped", "served as no Content-Type"),
                      ("png-as-gif", "is a PNG served as image/gif")):
      with pytest.raises(images.Refused, match=why):
        reader.fetch(f"http://{at}/{name}")
  # Bytes read without a fetch (prepare_corpus's path) are held to the same
  # formats: Pillow never opens the EPS (which would start Ghostscript).
  for name in ("bmp", "eps"):
    with pytest.raises(images.Refused, match="not a PNG, JPEG, GIF or WebP"):
      list(images._frames(bodies[name]))  # pylint: disable=protected-access


def test_only_global_unicast_addresses_unless_a_pattern_names_one():
  """Literal addresses: nothing is resolved or connected to."""
  for address in ("100.64.1.1", "100.127.255.254", "10.0.0.1", "172.16.0.1",
                  "192.168.1.1", "127.0.0.1", "169.254.169.254", "0.0.0.0",
                  "192.0.2.1", "198.18.0.1", "224.0.0.1", "240.0.0.1",
                  "255.255.255.255", "[::1]", "[fe80::1]", "[fc00::1]",
                  "[::ffff:127.0.0.1]", "[2002:7f00:1::]", "[ff02::1]",
                  "[2001:db8::1]", "[::]"):
    with pytest.raises(images.Refused, match="non-global address"):
      images._host_allowed(f"http://{address}/x.png", ["*"])  # pylint: disable=protected-access
  assert images._host_allowed(  # pylint: disable=protected-access
      "http://93.184.215.14/x.png", ["*"]) == ["93.184.215.14"]
  assert images._host_allowed(  # pylint: disable=protected-access
      "http://100.64.1.1/x.png", ["100.64.1.1"]) == ["100.64.1.1"]
  assert images._host_allowed(  # pylint: disable=protected-access
      "http://[::1]:8080/x.png", ["[::1]:8080"]) == ["::1"]


def test_a_pattern_allows_its_port_or_else_the_default_port_only(tmp_path):
  allowed = images._host_allowed  # pylint: disable=protected-access
  ip = "93.184.215.14"
  for url, patterns in ((f"http://{ip}/x", [ip]),
                        (f"http://{ip}:80/x", [ip]),
                        (f"https://{ip}/x", [ip]),
                        (f"http://{ip}:8080/x", [f"{ip}:8080"]),
                        (f"https://{ip}:8080/x", ["93.184.*:8080"])):
    assert allowed(url, patterns) == [ip], url
  for url, patterns in ((f"http://{ip}:8080/x", [ip]),
                        (f"https://{ip}:80/x", [ip]),
                        (f"http://{ip}:8080/x", ["*"]),
                        (f"http://{ip}/x", [f"{ip}:8080"]),
                        (f"http://{ip}:8081/x", [f"{ip}:8080"]),
                        ("http://64.media.tumblr.com:8443/x.png",
                         images.TUMBLR_MEDIA_HOSTS)):
    with pytest.raises(images.Refused, match="not an allowed image host"):
      allowed(url, patterns)
  for pattern in ("127.0.0.1:http", "127.0.0.1:99999", "127.0.0.1:\u00b2",
                  "[::1]x"):
    with pytest.raises(UserError, match="image host pattern"):
      images.ImageReader(str(tmp_path / "cache.db"), [pattern])
