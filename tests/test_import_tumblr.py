"""Tumblr's own blog export, read as Tumblr writes it, and bad archives.

The export is tests/data/tumblr_export (its README says where the layout
comes from; the people are made up): a reblog chain in a text post and in
a photo post, a read-more cut, a WordPress cross-post, a link-only and a
media-only post, an answered ask and a direct-message conversation. The
expected documents are written by hand from the text format's rules.
"""

import json
import os
import resource
import subprocess
import sys
import zipfile

import pytest

from bot.corpus import archives, documents
from bot.corpus.archives import common
from gpt2.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT = os.path.join(REPO, "tests", "data", "tumblr_export")
ME = "marigold-writes"
OTHERS = ("tomato-oracle", "pebble-and-fern", "quietkettle",
          "lanternfish-fan")


def export_files(only=""):
  """{path in the export: bytes} of the fixture (those under `only`)."""
  files = {}
  for root, _, names in os.walk(EXPORT):
    for name in names:
      path = os.path.join(root, name)
      inside = os.path.relpath(path, EXPORT).replace(os.sep, "/")
      if inside != "README.md" and inside.startswith(only):
        with open(path, "rb") as f:
          files[inside] = f.read()
  return files


def zipped(path, files, prefix=""):
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
    for name, data in sorted(files.items()):
      z.writestr(prefix + name, data)
  return str(path)


def document_texts(posts):
  # Every post, whatever share of it is the owner's (that is
  # prepare_corpus's choice, not the importer's).
  return [d.text for d in documents.documents(
      [json.loads(json.dumps(p)) for p in posts], min_own_fraction=0.0)]


def run_launch(*args, **kwargs):
  return subprocess.run([sys.executable, "-m", "launch.import_archive",
                         *args], cwd=REPO, capture_output=True, text=True,
                        timeout=60, **kwargs)


EXPECTED = [
    # A text post's reblog chain: after the empty <h1></h1>, each blog's
    # turn under its name, the owner's comment the owner's.
    " Conversation between tomato-oracle, pebble-and-fern and "
    "marigold-writes | 3 posts |\n"
    "#1 tomato-oracle posted:\n\n"
    "reblog this with your hottest tomato takes\n\n"
    "#2 pebble-and-fern commented:\n\n"
    "tomatoes belong in fruit salad and I will not be taking questions\n\n"
    "#3 marigold-writes commented:\n\n"
    "Written 11 AM September 2021 | marigold-writes's tags: #tomatoes, "
    "#food discourse\n\n"
    "roasted cherry tomatoes on toast, every morning, is the only correct "
    "answer",
    # A photo post: the image is the original poster's, the caption div's
    # chain split as the text post's.
    " Conversation between quietkettle and marigold-writes | 2 posts |\n"
    "#1 quietkettle posted:\n\n"
    "[image]\n\n"
    "my kettle at dawn. pebble-and-fern says it looks haunted\n\n"
    "#2 marigold-writes commented:\n\n"
    "Written 7 PM October 2021 | marigold-writes's tags: #kettles\n\n"
    "it looks like it knows things, and I respect that",
    # [[MORE]] is not text.
    "#1 marigold-writes posted:\n\n"
    "Written 9 AM October 2021 | marigold-writes's tags:\n\n"
    "<b>on kettles</b>\n\n"
    "a kettle is a small weather system.\n\n"
    "it rains on the inside, and nobody minds.",
    # Nor is "View On WordPress".
    "#1 marigold-writes posted:\n\n"
    "Written 9 AM October 2021 | marigold-writes's tags: #garden\n\n"
    "<b>Garden notes</b>\n\n"
    "the basil bolted again, so now it is a basil tree.",
    # The answered ask: the escaped question is the asker's.
    " Conversation between lanternfish-fan and marigold-writes | 2 posts |\n"
    "#1 lanternfish-fan asked:\n\n"
    "what is your <b>favourite</b> kettle?\n\n"
    "#2 marigold-writes responded:\n\n"
    "Written 8 PM October 2021 | marigold-writes's tags: #asks\n\n"
    "the one that sings off-key, obviously.",
    # The conversation, newest first on the page, in time order.
    " Conversation between tomato-oracle and marigold-writes | 2 posts |\n"
    "#1 tomato-oracle posted:\n\n"
    "your tomato take is unhinged\n\n"
    '<a href="https://marigold-writes.tumblr.com/post/700000000001">'
    "https://marigold-writes.tumblr.com/post/700000000001</a>\n\n"
    "#2 marigold-writes commented:\n\n"
    "Written 11 AM September 2021 | marigold-writes's tags:\n\n"
    "ha, thank you! the toast take was completely sincere and I stand by "
    "every word of it",
]


@pytest.mark.parametrize("layout", ["folder", "zip", "nested zip"])
def test_the_export_as_tumblr_writes_it(tmp_path, layout):
  if layout == "folder":
    path = EXPORT
  else:
    path = zipped(tmp_path / "marigold-writes.zip", export_files(),
                  "export/" if layout == "nested zip" else "")
  posts, report = archives.import_archive(
      "tumblr", path, common.Options(ME), pseudonymize=False)
  assert document_texts(posts) == EXPECTED
  assert [p["id"] for p in posts][:5] == [
      "700000000001", "700000000002", "700000000003", "700000000006",
      "700000000007"]
  ask = posts[4]
  assert ask["trail"] == [] and ask["layout"][0]["type"] == "ask"
  assert report["skipped"] == {"link-only posts": 1, "media-only posts": 1}
  assert report["posts"] == 6 and report["threads"] == 4


def test_a_folder_of_conversations_alone_is_an_export(tmp_path):
  path = zipped(tmp_path / "dms.zip", export_files("conversations/"))
  posts, _ = archives.import_archive("tumblr", path, common.Options(ME),
                                    pseudonymize=False)
  assert document_texts(posts) == [EXPECTED[-1]]


def test_pseudonymized_export_names_no_other_blog(tmp_path):
  archive = zipped(tmp_path / "export.zip", export_files())
  out = tmp_path / "posts.jsonl"
  written = ""
  for report in ("report.html", "report.json"):
    done = run_launch("--kind=tumblr", f"--archive={archive}", f"--me={ME}",
                      f"--out={out}", f"--report={tmp_path / report}",
                      "--pseudonymize")
    assert done.returncode == 0, done.stderr
    written += (done.stdout + done.stderr + out.read_text()
                + (tmp_path / report).read_text())
  posts = [json.loads(line) for line in out.read_text().splitlines()]
  written += "\n".join(document_texts(posts))
  everything = b"".join(export_files().values()).decode("utf-8", "replace")
  for name in OTHERS:
    assert name in everything  # the names are there to be found
    for form in (name, name.replace("-", "_"), name.replace("-", "")):
      assert form not in written.lower(), form
  assert ME in written  # one's own name stays
  assert "pseudonymized 4 people" in written
  # The turns are still each blog's: four pseudonyms, one a blog.
  authors = {t["blog"]["name"] for p in posts for t in p["trail"]}
  assert len(authors) == 3 and ME not in authors


# ---- bad files: one line, exit 2 ---------------------------------------------


def patched_zip(path, name, data, flags=None, method=None):
  """A zip of one file whose headers claim `flags` / `method` (Python writes
  neither encrypted nor Deflate64 entries)."""
  zipped(path, {name: data})
  raw = bytearray(path.read_bytes())
  for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8),
                                        (b"PK\x01\x02", 8, 10)):
    at = raw.index(signature)
    if flags is not None:
      raw[at + flag_at] |= flags
    if method is not None:
      raw[at + method_at:at + method_at + 2] = method.to_bytes(2, "little")
  path.write_bytes(bytes(raw))
  return str(path)


PAGE = export_files("posts/html/700000000003")["posts/html/700000000003.html"]


@pytest.mark.parametrize("case, expected", [
    ("encrypted", "posts/html/1.html is encrypted: unpack the archive with "
                  "its password and give the folder"),
    ("deflate64", "posts/html/1.html is compressed in a way Python cannot "
                  "read (method 9): unpack the archive with another tool "
                  "and give the folder"),
    ("deep json", "messages/messages.json is JSON nested too deeply to read"),
    ("deep divs", "posts/html/1.html is HTML nested deeper than 200 "
                  "elements: not a post page"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path, case, expected):
  path = tmp_path / "export.zip"
  if case == "encrypted":
    archive = patched_zip(path, "posts/html/1.html", PAGE, flags=0x1)
  elif case == "deflate64":
    archive = patched_zip(path, "posts/html/1.html", PAGE, method=9)
  elif case == "deep json":
    archive = zipped(path, {"messages/messages.json":
                            "[" * 200_000 + "]" * 200_000})
  else:
    archive = zipped(path, {"posts/html/1.html":
                            "<div>" * 3000 + "hi" + "</div>" * 3000})
  out = tmp_path / "posts.jsonl"
  done = run_launch("--kind=tumblr", f"--archive={archive}", f"--me={ME}",
                    f"--out={out}")
  assert (done.returncode, done.stderr) == (2, f"error: {archive}: "
                                                f"{expected}\n")
  assert not out.exists()


def limit_memory():
  # Address space, not resident memory: a 300 MB file read whole is over
  # it at once, and so is the interpreter's peak for holding it.
  resource.setrlimit(resource.RLIMIT_AS, (600 * 2**20, 600 * 2**20))


def test_a_zip_bomb_is_refused_before_it_is_in_memory(tmp_path):
  archive = tmp_path / "export.zip"
  with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
    with z.open("posts/html/1.html", "w") as f:
      for _ in range(300):
        f.write(b" " * 2**20)
  assert archive.stat().st_size < 400_000  # 300 KB that unpacks to 300 MB
  out = tmp_path / "posts.jsonl"
  done = run_launch("--kind=tumblr", f"--archive={archive}", f"--me={ME}",
                    f"--out={out}", preexec_fn=limit_memory)
  assert (done.returncode, done.stderr) == (
      2, f"error: {archive}: posts/html/1.html unpacks to more than 256 MiB "
         "(--max_file_mb raises the cap)\n")
  # The cap on all files together, given smaller than the one file.
  with pytest.raises(UserError, match=r"posts/html/1.html: the archive's "
                     r"files unpack to more than 100 MiB in all "
                     r"\(--max_total_mb raises the cap\)$"):
    archives.import_archive("tumblr", str(archive), common.Options(
        ME, max_file_bytes=2**30, max_total_bytes=100 * 2**20))


def test_a_read_more_cut_inside_a_paragraph_is_not_text():
  # pylint: disable-next=import-outside-toplevel
  from bot.corpus.archives import tumblr_export
  blocks = tumblr_export._blocks(  # pylint: disable=protected-access
      "<p>before the cut [[MORE]]and <b>after</b></p>")
  assert common.text_of(blocks) == "before the cut and <b>after</b>"
