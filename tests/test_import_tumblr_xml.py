"""Tumblr's `posts/posts.xml` (issue 38): the posts of an export in one XML
file, Tumblr's API v1 format, read alone or beside `posts/html/` without
reading a post twice.

The export is tests/data/tumblr_posts_xml (its README.md says where its
layout comes from; the people are made up: the owner
marigold-writes, the others tomato-oracle, pebble-and-fern and
quietkettle), beside tests/data/tumblr_export, the same blog's pages.
"""

import json
import os
import re
import shutil
import zipfile

import pytest

from bot.corpus import archives
from gpt2.errors import UserError
from tests import test_import_archive as base
from tests import test_import_tumblr as tumblr_pages

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
XML_EXPORT = os.path.join(DATA, "tumblr_posts_xml")
PAGES_EXPORT = os.path.join(DATA, "tumblr_export")
ME = "marigold-writes"
OTHERS = ("tomato-oracle", "pebble-and-fern", "quietkettle")

# The reblogs of the pages' export (tests/test_import_tumblr.py), which
# posts.xml holds too: read from it, they are the same documents.
CHAIN, PHOTO = tumblr_pages.EXPECTED[:2]
LINK = ("#1 marigold-writes posted:\n\n"
        "Written 12 AM October 2021 | marigold-writes's tags: #tomatoes, "
        "#reading\n\n"
        '<a href="https://tomatoes.example.invalid/field-guide">A field guide '
        "to heirloom tomatoes</a>\n\n"
        "the best thing I read all week; the Cherokee Purple section made me "
        "cry")
QUOTE = ("#1 marigold-writes posted:\n\n"
         "Written 4 AM October 2021 | marigold-writes's tags: #kettles\n\n"
         "<blockquote>A kettle is a promise that tea is coming.</blockquote>"
         "\n\nme, at 3am, to quietkettle")


def imported(path, pseudonymize=False, key=None):
  return base.imported_texts("tumblr", path, ME, pseudonymize, key)


def zipped(folder, path):
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
    for root, _, names in os.walk(folder):
      for name in names:
        if not name.endswith(".md"):
          full = os.path.join(root, name)
          z.write(full, "marigold-writes/" + os.path.relpath(full, folder))
  return str(path)


@pytest.mark.parametrize("as_zip", [False, True])
def test_an_export_of_posts_xml_alone(tmp_path, as_zip):
  path = zipped(XML_EXPORT, tmp_path / "x.zip") if as_zip else XML_EXPORT
  texts, posts, report = imported(path)
  assert texts == [CHAIN, PHOTO, LINK, QUOTE]
  assert [p["id"] for p in posts] == ["700000000011", "700000000012",
                                      "700000000013", "700000000014"]
  assert report["skipped"] == {"asks not answered": 1}


def test_a_post_reads_the_same_from_the_xml_as_from_its_page():
  pages, _, _ = imported(PAGES_EXPORT)
  assert CHAIN in pages and PHOTO in pages


def test_beside_the_pages_each_post_is_read_once(tmp_path):
  export = tmp_path / "export"
  shutil.copytree(PAGES_EXPORT, export)
  with open(os.path.join(XML_EXPORT, "posts", "posts.xml"),
            encoding="utf-8") as f:
    xml = f.read()
  # The chain is also the page 700000000001: the page is read, not this.
  xml = xml.replace('id="700000000011"', 'id="700000000001"').replace(
      "is the only correct answer", "as the XML says")
  (export / "posts" / "posts.xml").write_text(xml, encoding="utf-8")
  pages, _, _ = imported(PAGES_EXPORT)
  texts, posts, report = imported(str(export))
  ids = [p["id"] for p in posts]
  assert ids.count("700000000001") == 1
  # The photo reblog is also a page under another id: met twice, kept once.
  assert sorted(texts) == sorted(pages + [LINK, QUOTE])
  assert not any("as the XML says" in t for t in texts)
  assert report["skipped"]["asks not answered"] == 1
  assert report["skipped"]["duplicates"] == 1


def test_pseudonymized_posts_xml_names_no_other_blog(tmp_path):
  texts, posts, report = imported(XML_EXPORT, pseudonymize=True,
                                  key=str(tmp_path / "k"))
  written = "\n".join([json.dumps(posts), *texts, archives.summary(
      report, "posts.jsonl"), json.dumps(report)])
  for name in OTHERS:
    assert not re.search(re.escape(name), written, re.IGNORECASE), name
  assert report["people_pseudonymized"] == 3


@pytest.mark.parametrize("xml, expected", [
    ('<?xml version="1.0"?><!DOCTYPE t [<!ENTITY a "aaaa">]>'
     "<tumblr><posts><post>&a;</post></posts></tumblr>",
     "it declares a document type"),
    ("<tumblr><posts><post id='1' type='regular'>", "well-formed XML"),
    ("<rss><channel/></rss>", "Tumblr's posts XML (<tumblr><posts>"),
])
def test_a_bad_posts_xml_is_one_line(tmp_path, xml, expected):
  (tmp_path / "posts").mkdir()
  (tmp_path / "posts" / "posts.xml").write_text(xml)
  with pytest.raises(UserError, match=re.escape(
      f"{tmp_path}: posts/posts.xml is not ") + ".*" + re.escape(expected)):
    imported(str(tmp_path))
