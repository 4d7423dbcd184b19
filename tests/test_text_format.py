"""Posts to threads to the generator's text format, prompts, and back."""

import html
import json
import os
import re
import time

import hypothesis
from hypothesis import strategies as hypothesis_st
import pytest

from bot import text_format
from bot.tumblr import html_subset, npf
from bot.tumblr.thread import Thread, Turn
from gpt2.tokenizer import EOT

# Tumblr's docs (Apache-2.0), copied with their licence: see NOTICE.md there.
REFERENCE = os.path.join(os.path.dirname(__file__), "data", "tumblr-docs")
JAN_7_2021_11PM = 1610061300  # 2021-01-07 23:15 UTC

# ---- the golden string ------------------------------------------------------

# An ask answered by alice, reblogged with comments by bob, then by carol
# with tags. Written by hand from the format rules, not from the code.
GOLDEN = (
    " Conversation between curious-cat, alice, bob and carol | 4 posts |\n"
    "#1 curious-cat asked:\n"
    "\n"
    "what's your favourite colour?\n"
    "\n"
    "#2 alice responded:\n"
    "\n"
    "blue, <i>obviously</i>\n"
    "\n"
    "#3 bob commented:\n"
    "\n"
    "wrong\n"
    "\n"
    "#4 carol commented:\n"
    "\n"
    "Written 11 PM January 2021 | carol's tags: #colours, #discourse\n"
    "\n"
    "you're both wrong")

ASK_AND_TWO_REBLOGS_NPF = {
    "object_type": "post", "type": "blocks", "id": 3, "id_string": "3",
    "blog": {"name": "carol", "uuid": "t:carol"}, "blog_name": "carol",
    "timestamp": JAN_7_2021_11PM, "tags": ["colours", "discourse"],
    "note_count": 12,
    "trail": [
        {"post": {"id": "1", "timestamp": JAN_7_2021_11PM - 7200},
         "blog": {"name": "alice", "uuid": "t:alice"},
         "content": [
             {"type": "text", "text": "what's your favourite colour?"},
             {"type": "text", "text": "blue, obviously",
              "formatting": [{"start": 6, "end": 15, "type": "italic"}]}],
         "layout": [{"type": "ask", "blocks": [0], "attribution": {
             "type": "blog", "url": "https://curious-cat.tumblr.com",
             "blog": {"name": "curious-cat"}}}]},
        {"post": {"id": "2"}, "blog": {"name": "bob"},
         "content": [{"type": "text", "text": "wrong"}], "layout": []},
    ],
    "content": [{"type": "text", "text": "you're both wrong"}],
    "layout": [],
}

ASK_AND_TWO_REBLOGS_LEGACY = {
    "type": "answer", "id": 3, "blog_name": "carol",
    "timestamp": JAN_7_2021_11PM, "tags": ["colours", "discourse"],
    "asking_name": "curious-cat",
    "question": "what&#8217;s your favourite colour?".replace("&#8217;", "'"),
    "answer": "ignored when a trail is given",
    "trail": [
        {"blog": {"name": "alice"}, "post": {"id": "1"},
         "content_raw": "<p>blue, <em>obviously</em></p>",
         "is_root_item": True},
        {"blog": {"name": "bob"}, "post": {"id": "2"},
         "content_raw": "<p>wrong</p>"},
        {"blog": {"name": "carol"}, "post": {"id": "3"},
         "content_raw": "<p>you're both wrong</p>", "is_current_item": True},
    ],
}


def test_golden_string_npf():
  thread = text_format.post_to_thread(ASK_AND_TWO_REBLOGS_NPF)
  assert text_format.format_thread(thread) == GOLDEN
  assert thread.post_id == "3" and thread.note_count == 12
  assert [t.kind for t in thread.turns] == [
      "asked", "responded", "commented", "commented"]


def test_golden_string_legacy_trail():
  thread = text_format.post_to_thread(ASK_AND_TWO_REBLOGS_LEGACY)
  assert text_format.format_thread(thread) == GOLDEN


def test_golden_string_legacy_nested_blockquotes():
  # Older legacy posts carry their reblog trail in the HTML itself.
  post = dict(ASK_AND_TWO_REBLOGS_LEGACY)
  del post["trail"]
  post["answer"] = (
      '<p><a class="tumblr_blog" href="https://bob.tumblr.com/post/2">bob</a>'
      ':</p><blockquote><p><a class="tumblr_blog" '
      'href="https://alice.tumblr.com/post/1">alice</a>:</p>'
      "<blockquote><p>blue, <i>obviously</i></p></blockquote>"
      "<p>wrong</p></blockquote><p>you're both wrong</p>")
  thread = text_format.post_to_thread(post)
  assert text_format.format_thread(thread) == GOLDEN


def test_name_map_renames_everywhere():
  thread = text_format.post_to_thread(ASK_AND_TWO_REBLOGS_NPF)
  text = text_format.format_thread(thread, name_map={"carol": "Frank"})
  assert text.startswith(
      " Conversation between curious-cat, alice, bob and Frank | 4 posts |\n")
  assert "#4 Frank commented:\n\nWritten 11 PM January 2021 | Frank's tags:" \
      in text
  assert "carol" not in text


def test_docstring_example_is_what_the_code_writes():
  doc = text_format.__doc__
  example = doc.split("A thread with an ask and two reblogs:\n\n")[1]
  example = example.split("\n\n(the header")[0]
  expected = "\n".join(line[4:] for line in example.split("\n"))
  turns = (Turn("anon-asker", "asked", "what's your favourite colour?"),
           Turn("alice", "responded", "blue, <i>obviously</i>"),
           Turn("bob", "commented", "wrong"),
           Turn("alice", "commented", "you're wrong", ("colours", "discourse"),
                JAN_7_2021_11PM))
  assert text_format.format_thread(Thread(turns, "alice")) == expected


def test_owner_spans_are_the_owners_words_and_last_tags():
  turns = (Turn("anon-asker", "asked", "what's your favourite colour?"),
           Turn("alice", "responded", "blue, <i>obviously</i>"),
           Turn("bob", "commented", "wrong"),
           Turn("alice", "commented", "you're wrong", ("colours", "discourse"),
                JAN_7_2021_11PM))
  thread = Thread(turns, "alice")
  text, spans = text_format.format_thread_spans(thread, {"alice": "Frank"})
  assert text == text_format.format_thread(thread, {"alice": "Frank"})
  # Each turn of hers, and after her last `tags:` what the bot writes (the
  # prompt gives the turn lines: they are not hers to learn).
  assert [text[a:b] for a, b in spans] == [
      "blue, <i>obviously</i>", " #colours, #discourse\n\nyou're wrong"]
  assert spans[-1][1] == len(text)
  # Someone else's last turn: hers are the only spans.
  text, spans = text_format.format_thread_spans(Thread(turns[:3], "alice"))
  assert [text[a:b] for a, b in spans] == ["blue, <i>obviously</i>"]


def test_single_post_has_no_header_and_times_use_12_hours():
  thread = Thread((Turn("alice", "posted", "hi", (), 1609459200 + 30),))
  assert text_format.format_thread(thread) == (
      "#1 alice posted:\n\nWritten 12 AM January 2021 | alice's tags:\n\nhi")
  noon = Thread((Turn("alice", "posted", "hi", ("a",), 1609502400),))
  assert "Written 12 PM January 2021 | alice's tags: #a\n" in (
      text_format.format_thread(noon))


def test_documents_are_joined_with_endoftext():
  assert text_format.join_documents(["a", "b", "c"]) == (
      f"a{EOT}b{EOT}c")


# ---- every JSON example of the NPF spec -------------------------------------


def _code_blocks(markdown):
  for match in re.finditer(r"```(\w*)[ \t]*\n(.*?)```", markdown, re.S):
    lang, body = match.group(1).lower(), match.group(2)
    if lang == "json" or (not lang and body.lstrip().startswith(("{", '"'))):
      yield body


_QUOTED_VALUE = re.compile(r'^(\s*"[^"]+":\s*")(.*)("\s*,?\s*)$')


def _scan(text, drop):
  """Copies text, letting `drop` skip characters outside JSON strings."""
  out, i, in_string = [], 0, False
  while i < len(text):
    c = text[i]
    if in_string:
      out.append(text[i:i + 2] if c == "\\" else c)
      i += 2 if c == "\\" else 1
      in_string = c != '"'
      continue
    skip = drop(text, i)
    if skip:
      i += skip
      continue
    in_string = c == '"'
    out.append(c)
    i += 1
  return "".join(out)


def _comment_or_ellipsis(text, i):
  if text.startswith("//", i):
    end = text.find("\n", i)
    return (len(text) if end < 0 else end) - i
  return 3 if text.startswith("...", i) else 0


def _trailing_comma(text, i):
  return 1 if text[i] == "," and re.match(r",\s*[}\]]", text[i:]) else 0


def lenient_json(text):
  """The JSON values in a docs example, forgiving what the docs get wrong:
  // comments, `...`, trailing commas, unescaped quotes inside one-line
  strings, strings across lines, bare `"key": value` fragments and several
  objects in one block."""
  lines = []
  for line in text.splitlines():
    match = _QUOTED_VALUE.match(line)
    if match and '"' in match.group(2):
      escaped = match.group(2).replace('"', '\\"')
      line = match.group(1) + escaped + match.group(3)
    lines.append(line)
  text = _scan(_scan("\n".join(lines), _comment_or_ellipsis), _trailing_comma)
  text = text.strip()
  if text.startswith('"'):
    text = "{" + text + "}"
  decoder, values, i = json.JSONDecoder(strict=False), [], 0
  while i < len(text):
    if text[i] in " \t\r\n,":
      i += 1
      continue
    value, i = decoder.raw_decode(text, i)
    values.append(value)
  return values


def _as_post(value):
  """An example as the post it shows: a post, or a lone block or object."""
  if isinstance(value, dict) and {"content", "trail", "layout", "id",
                                  "blog"} & value.keys():
    return value
  if isinstance(value, dict) and len(value) == 1:
    inner = next(iter(value.values()))
    if isinstance(inner, dict) and "content" in inner:
      return inner  # e.g. "paywall_reblog_view": {...}
  return {"content": [value]}


def _text_block_texts(post):
  holders = [post] + [t for t in post.get("trail", []) if isinstance(t, dict)]
  texts = []
  for holder in holders:
    content = holder.get("content")
    for block in [content] if isinstance(content, dict) else content or []:
      if isinstance(block, dict) and block.get("type") == "text":
        texts.append(block["text"])
  return texts


def _plain(formatted):
  return html.unescape(re.sub(r"<[^>]+>", "", formatted))


def npf_spec_examples():
  with open(f"{REFERENCE}/tumblr-npf-spec.md", encoding="utf-8") as f:
    markdown = f.read()
  return [value for block in _code_blocks(markdown)
          for value in lenient_json(block)]


def test_every_npf_spec_example_parses_and_its_text_survives():
  examples = npf_spec_examples()
  assert len(examples) >= 45  # the spec has about fifty
  texts_checked = 0
  for value in examples:
    post = _as_post(value)
    formatted = text_format.format_thread(text_format.post_to_thread(post))
    for text in _text_block_texts(post):
      assert text.strip() in _plain(formatted), (text, formatted)
      texts_checked += 1
  assert texts_checked >= 60


def test_npf_spec_formatting_examples_render_as_the_spec_says():
  block = {"type": "text", "text": "supercalifragilisticexpialidocious",
           "formatting": [{"start": 0, "end": 20, "type": "bold"},
                          {"start": 9, "end": 34, "type": "italic"}]}
  assert npf.content_to_text([block]) == (
      "<b>supercali<i>fragilistic</i></b><i>expialidocious</i>")


def test_npf_ask_layout_rows_order_and_broken_trail():
  post = {
      "blog": {"name": "cyle"},
      "trail": [{"broken_blog_name": "old-broken-blog",
                 "content": [{"type": "text", "text": "the broken root"}],
                 "layout": []}],
      "content": [
          {"type": "text", "text": "second in rows"},
          {"type": "text", "text": "first in rows"},
          {"type": "poll", "question": "?"},
          {"type": "image", "media": [{"url": "https://x/y.jpg"}],
           "alt_text": "a cat"}],
      "layout": [{"type": "rows", "display": [{"blocks": [1]},
                                              {"blocks": [0]}]}],
  }
  thread = text_format.post_to_thread(post)
  assert [(t.author, t.kind) for t in thread.turns] == [
      ("old-broken-blog", "posted"), ("cyle", "commented")]
  assert thread.turns[1].text == (
      "first in rows\n\nsecond in rows\n\n[unsupported: poll]\n\n"
      "[image: a cat]")


def test_anonymous_ask_without_answer():
  post = {"blog": {"name": "frank"}, "state": "submission",
          "content": [{"type": "text", "text": "are you a bot?"}],
          "layout": [{"type": "ask", "blocks": [0]}]}
  thread = text_format.post_to_thread(post)
  assert [(t.author, t.kind, t.text) for t in thread.turns] == [
      ("Anonymous", "asked", "are you a bot?")]


# ---- the legacy format ------------------------------------------------------


def test_api_docs_legacy_answer_example():
  with open(f"{REFERENCE}/tumblr-api.md", encoding="utf-8") as f:
    markdown = f.read()
  section = markdown.split("#### Legacy Answer Posts")[1].split("### ")[0]
  envelope = lenient_json(next(_code_blocks(section)))[0]
  post = envelope["response"]["posts"][0]
  thread = text_format.post_to_thread(post)
  assert [(t.author, t.kind) for t in thread.turns] == [
      ("aperfectfacade", "asked"), ("david", "responded")]
  assert thread.turns[1].text.startswith(
      "Good catch! Tumblr <b>launched</b> in February 2007.")
  assert "\n\n<b>Tumblr Trivia:</b> Before Tumblr," in thread.turns[1].text


@pytest.mark.parametrize("post, expected", [
    ({"type": "photo", "blog_name": "a", "photos": [{"caption": ""}, {}],
      "caption": "<p>two photos</p>"},
     "[image]\n\n[image]\n\ntwo photos"),
    ({"type": "quote", "blog_name": "a", "text": "to be", "source": "bill"},
     "<blockquote>to be</blockquote>\n\nbill"),
    ({"type": "link", "blog_name": "a", "url": "https://x.org/", "title": "X",
      "description": "<p>see</p>"},
     '<a href="https://x.org/">X</a>\n\nsee'),
    ({"type": "chat", "blog_name": "a", "body": "ignored",
      "dialogue": [{"label": "A:", "phrase": "hi"},
                   {"label": "B:", "phrase": "hello"}]},
     "A: hi\n\nB: hello"),
    ({"type": "text", "blog_name": "a", "title": "Title",
      "body": "<p>one</p>\n\n<p>two<br>\nthree</p>"},
     "<b>Title</b>\n\none\n\ntwo\nthree"),
    ({"type": "audio", "blog_name": "a", "track_name": "Song",
      "artist": "Band", "caption": ""},
     "[audio: Song by Band]"),
])
def test_legacy_post_types(post, expected):
  thread = text_format.post_to_thread(post)
  assert [t.text for t in thread.turns] == [expected]


def test_legacy_reblog_without_comment_keeps_the_rebloggers_tags():
  post = {"type": "text", "blog_name": "bob", "tags": ["lol"],
          "timestamp": JAN_7_2021_11PM,
          "trail": [{"blog": {"name": "alice"}, "content_raw": "<p>joke</p>",
                     "is_root_item": True}]}
  assert text_format.format_thread(text_format.post_to_thread(post)) == (
      " Conversation between alice and bob | 2 posts |\n"
      "#1 alice posted:\n\njoke\n\n"
      "#2 bob commented:\n\n"
      "Written 11 PM January 2021 | bob's tags: #lol\n\n")


# ---- round trips ------------------------------------------------------------

CANONICAL_BODIES = [
    "plain text",
    "two\n\nparagraphs",
    "a line\nbreak inside",
    "<b>bold</b>, <i>italic</i> and <b><i>both</i></b>",
    '<b>a <a href="https://example.com/?a=1&amp;b=2">link</a></b> here',
    "<ul><li>one</li>\n<li>two <b>bold</b></li></ul>",
    "<ol><li>first</li>\n<ul><li>nested</li></ul>\n<li>second</li></ol>",
    "<blockquote>quoted\n\nsecond paragraph</blockquote>\n\nreply",
    "<blockquote>outer\n\n<blockquote>inner</blockquote></blockquote>",
    "intro\n\n<ul><li>item</li></ul>\n\n<blockquote>q</blockquote>",
    "emoji 😀👨‍👨‍👦 and CJK <b>漢字</b>かな한국어",
    "a < b && c > d, AT&T &amp;copy &lt;tag>",
]


@pytest.mark.parametrize("body", CANONICAL_BODIES)
def test_text_to_npf_to_thread_to_text_is_stable(body):
  assert html_subset.canonical_text(body) == body
  post = {"blog": {"name": "frank"}, "timestamp": JAN_7_2021_11PM,
          "tags": ["t"], "content": npf.text_to_content(body)}
  formatted = text_format.format_thread(text_format.post_to_thread(post))
  assert formatted == (
      "#1 frank posted:\n\nWritten 11 PM January 2021 | frank's tags: #t\n\n"
      + body)
  # And the legacy HTML form reads back to the same text.
  legacy = {"type": "text", "blog_name": "frank", "body":
            html_subset.blocks_to_html(html_subset.text_to_blocks(body))}
  assert text_format.post_to_thread(legacy).turns[0].text == body


def test_any_html_reaches_a_fixed_point_in_one_step():
  messy = ("<div>Hello <b>bold <i>both</b> italic?</i><p>para<br/>line"
           "<ul><li>a<ol><li>b</li></ol></li><li>c</ul>"
           "<blockquote><p>q<blockquote>deeper</blockquote></p></blockquote>"
           "<h2>Head</h2><script>alert(1)</script><img alt='x'>"
           "<a href='javascript:alert(1)'>no link</a>")
  once = html_subset.html_to_text(messy)
  assert html_subset.canonical_text(once) == once
  assert "javascript" not in once and "alert" not in once


# ---- prompts ----------------------------------------------------------------


def test_prompts_end_where_the_generator_continues():
  ask = text_format.post_to_thread(
      {"blog": {"name": "frank-bot"},
       "content": [{"type": "text", "text": "what's 2+2?"}],
       "layout": [{"type": "ask", "blocks": [0],
                   "attribution": {"type": "blog",
                                   "blog": {"name": "alice"}}}]})
  assert text_format.ask_prompt(ask, "Frank", JAN_7_2021_11PM) == (
      " Conversation between alice and Frank | 2 posts |\n"
      "#1 alice asked:\n\nwhat's 2+2?\n\n"
      "#2 Frank responded:\n\nWritten 11 PM January 2021 | Frank's tags:")
  assert text_format.text_post_prompt("Frank", JAN_7_2021_11PM) == (
      "#1 Frank posted:\n\nWritten 11 PM January 2021 | Frank's tags:")
  post = text_format.post_to_thread(
      {"blog": {"name": "frank-bot"}, "content": [{"type": "text",
                                                     "text": "I am a bot"}]})
  assert text_format.reply_prompt(
      post, "bob", "are you <really>?", "Frank", JAN_7_2021_11PM,
      name_map={"frank-bot": "Frank"}) == (
          " Conversation between Frank and bob | 3 posts |\n"
          "#1 Frank posted:\n\nI am a bot\n\n"
          "#2 bob commented:\n\nare you &lt;really>?\n\n"
          "#3 Frank commented:\n\nWritten 11 PM January 2021 | Frank's tags:")


def test_prompt_plus_continuation_is_a_training_document():
  thread = text_format.post_to_thread(ASK_AND_TWO_REBLOGS_NPF)
  prompt = text_format.reblog_prompt(thread, "frank", JAN_7_2021_11PM + 60)
  body = "<b>all</b> of you are wrong\n\n<ul><li>red</li>\n<li>green</li></ul>"
  continuation = f" #colours, #hot takes\n\n{body}{EOT}#1 junk"
  generated = text_format.split_continuation(continuation)
  assert generated.tags == ["colours", "hot takes"]
  assert generated.body == body
  reblog = {"blog": {"name": "frank"}, "timestamp": JAN_7_2021_11PM + 60,
            "trail": ASK_AND_TWO_REBLOGS_NPF["trail"] + [
                {"blog": {"name": "carol"},
                 "content": ASK_AND_TWO_REBLOGS_NPF["content"],
                 "layout": []}],
            **text_format.continuation_to_npf(continuation)}
  document = text_format.format_thread(text_format.post_to_thread(reblog))
  assert document == prompt + f" #colours, #hot takes\n\n{body}"


@pytest.mark.parametrize("continuation, tags, body", [
    (" #a, #b\n\nhello<|endoftext|>more", ["a", "b"], "hello"),
    ("\n\nno tags", [], "no tags"),
    (" #a\n\nmine\n\n#3 someone commented:\n\nnot mine", ["a"], "mine"),
    (" #a, #a, ,#b c \n\nx\n Conversation between x and y", ["a", "b c"], "x"),
    (" #only tags", ["only tags"], ""),
    ("", [], ""),
])
def test_split_continuation(continuation, tags, body):
  generated = text_format.split_continuation(continuation)
  assert (generated.tags, generated.body) == (tags, body)


def test_generated_npf_keeps_within_limits_and_drops_placeholders():
  long_paragraph = " ".join(["word"] * 3000)  # 14999 code points
  continuation = f" #long\n\n[image]\n\n<b>{long_paragraph}</b>\n\n[video: x]"
  content = text_format.continuation_to_npf(continuation)["content"]
  assert all(len(b["text"]) <= npf.TEXT_BLOCK_LIMIT for b in content)
  assert len(content) == 4
  assert " ".join(b["text"].strip() for b in content) == long_paragraph
  assert all(b["formatting"] == [{"start": 0, "end": len(b["text"]),
                                  "type": "bold"}] for b in content)
  legacy = text_format.continuation_to_legacy_answer(" #x, #y\n\nhi <i>you</i>")
  assert legacy == {"answer": "<p>hi <i>you</i></p>", "tags": "x,y"}


# ---- bad input --------------------------------------------------------------


def test_malformed_html_never_raises_and_keeps_the_text():
  bodies = ["<p><b>unclosed <i>tags</p><blockquote>never closed<ul><li>x",
            "</div></span></blockquote></ul>stray closers",
            "<a href=>empty</a><a>no href</a><<<>>>&&&;;",
            "<img src=x onerror=alert(1)><p/><br/><table><tr><td>cell</td>",
            '<p class="a" <b>broken attr</b></p><!-- comment --><![CDATA[x]]>']
  for body in bodies:
    thread = text_format.post_to_thread(
        {"type": "text", "blog_name": "a", "body": body})
    text = thread.turns[0].text
    assert html_subset.canonical_text(text) == text
  assert "never closed" in text_format.post_to_thread(
      {"type": "text", "blog_name": "a", "body": bodies[0]}).turns[0].text


@pytest.mark.parametrize("post", [
    {},
    {"content": None},
    {"content": "text?"},
    {"content": [None, 3, {"type": "text"},
                 {"type": "text", "text": "x",
                  "formatting": [{"start": "a"}, {"end": 99, "start": -5,
                                                  "type": "bold"}]},
                 {"type": "image"}, {"type": "audio", "title": 7}]},
    {"layout": [{"type": "ask", "blocks": [5, "x", None]}], "content": []},
    {"layout": "rows", "trail": "nope", "tags": "not a list"},
    {"trail": [None, {}, {"content": [{"type": "text", "text": "t"}]}]},
    {"type": "answer"},
    {"type": "photo", "photos": None},
    {"type": "text", "trail": [{"content_raw": None, "blog": None}]},
    {"type": "unknown-type", "timestamp": "not a number", "id": None},
])
def test_missing_and_wrong_fields_never_raise(post):
  thread = text_format.post_to_thread(post)
  assert thread.turns
  text_format.format_thread(thread)


@pytest.mark.parametrize("when", [10**13, -10**13, 1e300, float("inf"),
                                  float("-inf"), float("nan"), "1e400"])
def test_a_time_no_calendar_has_is_left_out(when):
  """Found by fuzzing: such times raised `year 318857 is out of range` and
  OverflowError. The post is read with no time line."""
  for post in ({"type": "text", "blog_name": "a", "body": "<p>hi</p>",
                "timestamp": when, "note_count": when},
               {"blog_name": "a", "timestamp": when, "note_count": when,
                "content": [{"type": "text", "text": "hi"}]}):
    thread = text_format.post_to_thread(post)
    assert thread.turns[0].timestamp is None
    assert "Written" not in text_format.format_thread(thread)
  assert text_format.written_line("a", 10**13, ()) == "a's tags:"


# Any JSON value, nested a little: what a malformed post's field may hold.
_JSON = hypothesis_st.recursive(
    hypothesis_st.none() | hypothesis_st.booleans()
    | hypothesis_st.integers(-10**20, 10**20)
    | hypothesis_st.floats() | hypothesis_st.text(max_size=12),
    lambda inner: hypothesis_st.lists(inner, max_size=3)
    | hypothesis_st.dictionaries(hypothesis_st.text(max_size=6), inner,
                                 max_size=3),
    max_leaves=8)
_POST_KEYS = ("type", "blog_name", "blog", "id", "id_string", "timestamp",
              "note_count", "tags", "body", "trail", "content", "layout",
              "question", "answer", "asking_name", "caption", "photos",
              "title", "text", "source", "url", "post", "reblogged_from_name")


@pytest.mark.slow
@hypothesis.settings(max_examples=250, deadline=None, derandomize=True,
                     database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(hypothesis_st.dictionaries(
    hypothesis_st.sampled_from(_POST_KEYS), _JSON, max_size=8) | hypothesis_st.
                  builds(lambda content, layout, trail, when: {
                      "content": content, "layout": layout, "trail": trail,
                      "timestamp": when, "blog_name": "b"},
                         hypothesis_st.lists(hypothesis_st.dictionaries(
                             hypothesis_st.sampled_from(
                                 ("type", "text", "formatting", "media",
                                  "url", "attribution", "subtype")), _JSON,
                             max_size=4), max_size=3),
                         _JSON, _JSON, _JSON))
def test_any_malformed_post_dict_is_read(post):
  """post_to_thread never raises on a dict, whatever its fields hold."""
  thread = text_format.post_to_thread(post)
  assert thread.turns
  assert isinstance(text_format.format_thread(thread), str)


def test_a_post_is_a_dict():
  with pytest.raises(TypeError):
    text_format.post_to_thread(["not", "a", "post"])


def test_emoji_and_cjk_ranges_count_code_points():
  text = "👨‍👨‍👦 family 漢字 and 😻"
  start = text.index("漢")
  block = {"type": "text", "text": text,
           "formatting": [{"start": start, "end": start + 2, "type": "bold"},
                          {"start": len(text) - 1, "end": len(text),
                           "type": "italic"}]}
  rendered = npf.content_to_text([block])
  assert rendered == "👨‍👨‍👦 family <b>漢字</b> and <i>😻</i>"
  assert npf.text_to_content(rendered) == [block]


def test_one_megabyte_posts():
  paragraph = "lorem ipsum 漢字 😀 " * 40
  big_text = "\n\n".join([paragraph] * 1400)
  assert len(big_text.encode("utf-8")) > 1_000_000
  start = time.perf_counter()
  npf_post = {"blog": {"name": "a"},
              "content": [{"type": "text", "text": big_text}]}
  thread = text_format.post_to_thread(npf_post)
  legacy_post = {"type": "text", "blog_name": "a",
                 "body": "".join(f"<p>{paragraph}</p>" for _ in range(1400))}
  legacy_thread = text_format.post_to_thread(legacy_post)
  assert thread.turns[0].text == legacy_thread.turns[0].text
  content = npf.text_to_content(thread.turns[0].text)
  assert len(content) <= npf.MAX_BLOCKS  # 1400 paragraphs, packed
  assert all(len(b["text"]) <= npf.TEXT_BLOCK_LIMIT for b in content)
  assert npf.content_to_text(content) == thread.turns[0].text
  huge_block = npf.text_to_content("x" * 1_000_000)
  assert [len(b["text"]) for b in huge_block][:2] == [4096, 4096]
  assert sum(len(b["text"]) for b in huge_block) == 1_000_000
  assert time.perf_counter() - start < 20
