"""Text in images: OCR into the prompt, the cache, and where images may come
from. Images are drawn here with Pillow and served by the local Tumblr
server's media path."""

import io
import socket

import pytest
from PIL import Image, ImageDraw, ImageFont

from bot import images, loop
from bot.state import Trace
from bot.tumblr import html_subset, npf
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


def image_ask(server, url, question="what does this say?", asker="alice"):
  content = [{"type": "text", "text": question},
             {"type": "image", "media": [{"url": url, "type": "image/png",
                                          "width": 640, "height": 200}]}]
  return server.add_post(BOT, content, layout=[{
      "type": "ask", "blocks": [0, 1], "attribution": {
          "type": "blog", "blog": {"name": asker}}}], state="submission")


def test_the_text_in_an_image_reaches_the_prompt_once(server, tmp_path,
                                                      bot_model):
  server.media["frogs.png"] = ("image/png", drawn([SENTENCE]))
  url = f"{server.url}/media/frogs.png"
  first = image_ask(server, url)
  cfg = make_config(server, tmp_path)
  cfg.images.allowed_hosts = host(server)
  cfg.choice.min_chars = 1
  runs = images.ocr_runs
  loop.run_pass(cfg, model=bot_model)
  assert images.ocr_runs == runs + 1
  (entry,) = [e for e in Trace(cfg.state + ".trace.jsonl").read()
              if e.get("job") == f"ask:{first}"]
  match = next(line for line in entry["prompt"].splitlines()
               if line.startswith("[image"))
  assert match.startswith("[image | text: ")
  words = SENTENCE.split()
  assert sum(w in match for w in words) >= len(words) - 1, match
  # The same image in another ask: read from the cache, not again.
  second = image_ask(server, url, "and this one?", "bob")
  loop.run_pass(cfg, model=bot_model)
  assert images.ocr_runs == runs + 1
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
    anywhere = images.ImageReader(str(tmp_path / "cache2.db"), ["*"])
    with pytest.raises(images.Refused, match="private address"):
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
