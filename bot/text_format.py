"""Posts to the generator's text format, prompts, and generated text to posts.

The format (close to nostalgebraist-autoresponder's) writes a thread as:

- a header line ` Conversation between A, B and C | N posts |` (note the
  leading space; names in order of first appearance, N the number of turns),
  left out when the thread has a single turn;
- each turn as `#i NAME KIND:` (KIND is asked, responded, posted or
  commented), a blank line, and the turn's text in the HTML subset of
  `bot.tumblr.html_subset`; turns are separated by a blank line;
- in the last turn only, between the blank line and the text, the line
  `Written 11 PM January 2021 | NAME's tags: #a, #b` and another blank line.
  With no tags the line ends at `tags:`; with no known time it is just
  `NAME's tags: ...`.

A training document is the formatted thread; documents are joined with
`<|endoftext|>` between them (`join_documents`), so the generator learns to
end a post with it. A thread with an ask and two reblogs:

     Conversation between anon-asker, alice and bob | 4 posts |
    #1 anon-asker asked:

    what's your favourite colour?

    #2 alice responded:

    blue, <i>obviously</i>

    #3 bob commented:

    wrong

    #4 alice commented:

    Written 11 PM January 2021 | alice's tags: #colours, #discourse

    you're wrong

(the header line starts with one space; no line ends in whitespace and the
document does not end with a newline). A prompt is the same text for a
thread whose last turn is the bot's, cut right after `tags:`, so the
generator writes ` #tag, #tag`, a blank line, the post, and
`<|endoftext|>`: `prompt + continuation` has exactly the form of a training
document. `split_continuation` reads that back.

Author names can be renamed (`name_map`), e.g. to train a bot on a person's
blog under the bot's name; times are written in UTC unless told otherwise.
"""

import dataclasses
import datetime
import re
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from bot.tumblr import fields, html_subset, legacy, npf
from bot.tumblr.thread import (ASKED, COMMENTED, POSTED, RESPONDED, Thread,
                               Turn, UNKNOWN_AUTHOR)
from gpt2.tokenizer import EOT

When = Union[int, float, datetime.datetime, None]

# ---- posts to threads -------------------------------------------------------


def is_npf(post: dict) -> bool:
  """Whether a post dict is in the Neue Post Format (else legacy)."""
  if "content" in post or "layout" in post or post.get("type") == "blocks":
    return True
  trail = fields.dicts(post.get("trail"))
  return bool(trail) and isinstance(trail[0].get("content"), list)


def post_to_thread(post: dict) -> Thread:
  """A post as the API returns it (NPF or legacy) as a thread of turns.

  Never raises on a post dict, however incomplete: unknown blocks and media
  become placeholders, missing names become `unknown`.
  """
  if not isinstance(post, dict):
    raise TypeError(f"a post is a dict, not {type(post).__name__}")
  turns = npf.post_turns(post) if is_npf(post) else legacy.post_turns(post)
  if not turns:
    turns = [Turn(UNKNOWN_AUTHOR, POSTED, "")]
  blog = (npf.blog_name(post.get("blog"))
          or fields.string(post.get("blog_name")).strip() or UNKNOWN_AUTHOR)
  post_id = post.get("id_string") or post.get("id")
  return Thread(tuple(turns), blog,
                str(post_id) if post_id is not None else None,
                fields.integer(post.get("note_count")))


# ---- threads to text --------------------------------------------------------

_MONTHS = ("January", "February", "March", "April", "May", "June", "July",
           "August", "September", "October", "November", "December")


def _datetime(when: When, tz: datetime.tzinfo) -> Optional[datetime.datetime]:
  if when is None:
    return None
  if isinstance(when, datetime.datetime):
    return when.astimezone(tz) if when.tzinfo else when.replace(tzinfo=tz)
  try:
    return datetime.datetime.fromtimestamp(when, tz)
  except (OverflowError, ValueError, OSError):  # no year a calendar has
    return None


def _tags_text(tags: Sequence[str]) -> str:
  """What follows `tags:`: ` #a, #b`, or nothing."""
  return " " + ", ".join(f"#{t}" for t in tags) if tags else ""


def written_line(name: str, when: When, tags: Sequence[str],
                 tz: datetime.tzinfo = datetime.timezone.utc) -> str:
  """`Written 11 PM January 2021 | name's tags: #a, #b`."""
  line = f"{name}'s tags:" + _tags_text(tags)
  moment = _datetime(when, tz)
  if moment is None:
    return line
  hour = moment.hour % 12 or 12
  noon = "AM" if moment.hour < 12 else "PM"
  return (f"Written {hour} {noon} {_MONTHS[moment.month - 1]} {moment.year}"
          f" | {line}")


def _header(names: Sequence[str], turn_count: int) -> str:
  unique = list(dict.fromkeys(names))
  listed = unique[0] if len(unique) == 1 else (
      ", ".join(unique[:-1]) + " and " + unique[-1])
  return f" Conversation between {listed} | {turn_count} posts |"


def _format(turns: Sequence[Turn], name_map: Optional[Mapping[str, str]],
            tz: datetime.tzinfo, open_end: bool,
            owner: Optional[str] = None) -> Tuple[str, List[Tuple[int, int]]]:
  """The text of `turns`; with `open_end` it stops after the last `tags:`.
  Also the (start, end) character spans of the text that `owner` wrote:
  the text of each of its turns, and in a last turn of its own everything
  after `tags:` (what the bot writes after its prompt, which supplies the
  turn lines)."""
  name_map = name_map or {}
  names = [name_map.get(t.author, t.author) for t in turns]
  parts, spans = [], []
  length = 0

  def add(text: str, own: bool = False):
    nonlocal length
    if own and text:
      spans.append((length, length + len(text)))
    parts.append(text)
    length += len(text)

  if len(turns) > 1:
    add(_header(names, len(turns)) + "\n")
  for i, (turn, name) in enumerate(zip(turns, names), start=1):
    own = owner is not None and turn.author == owner
    add(f"#{i} {name} {turn.kind}:\n\n")
    if i < len(turns):
      add(turn.text, own)
      add("\n\n")
    elif open_end:
      add(written_line(name, turn.timestamp, (), tz))
    else:
      add(written_line(name, turn.timestamp, (), tz))
      add(_tags_text(turn.tags) + "\n\n" + turn.text, own)
  return "".join(parts), spans


def format_thread(thread: Thread,
                  name_map: Optional[Mapping[str, str]] = None,
                  tz: datetime.tzinfo = datetime.timezone.utc) -> str:
  """The thread as one training document (without `<|endoftext|>`)."""
  return _format(thread.turns, name_map, tz, open_end=False)[0]


def format_thread_spans(thread: Thread,
                        name_map: Optional[Mapping[str, str]] = None,
                        tz: datetime.tzinfo = datetime.timezone.utc
                        ) -> Tuple[str, List[Tuple[int, int]]]:
  """`format_thread`'s document and the (start, end) character spans of it
  that are the blog's own words (its turns' text; in its last turn, its
  tags too). The generator is trained on those alone; the rest is context
  (`gpt2.data`'s token weights)."""
  return _format(thread.turns, name_map, tz, open_end=False,
                 owner=thread.blog_name)


def join_documents(documents: Iterable[str]) -> str:
  """Documents as one training stream, `<|endoftext|>` between them."""
  return EOT.join(documents)


# ---- prompts ----------------------------------------------------------------


def _prompt(turns: Sequence[Turn], bot_name: str, kind: str, when: When,
            name_map: Optional[Mapping[str, str]],
            tz: datetime.tzinfo) -> str:
  moment = _datetime(when, tz)
  last = Turn(bot_name, kind, "", (),
              int(moment.timestamp()) if moment else None)
  return _format(list(turns) + [last], name_map, tz, open_end=True)[0]


def ask_prompt(ask: Thread, bot_name: str, when: When,
               name_map: Optional[Mapping[str, str]] = None,
               tz: datetime.tzinfo = datetime.timezone.utc) -> str:
  """The prompt for answering `ask` (a thread ending in the asked turn)."""
  return _prompt(ask.turns, bot_name, RESPONDED, when, name_map, tz)


def reply_prompt(post: Thread, replier: str, reply_text: str, bot_name: str,
                 when: When, name_map: Optional[Mapping[str, str]] = None,
                 tz: datetime.tzinfo = datetime.timezone.utc) -> str:
  """The prompt for answering a reply `reply_text` (plain text) to `post`."""
  reply_blocks = html_subset.plain_to_blocks(reply_text)
  reply = Turn(replier, COMMENTED, html_subset.blocks_to_text(reply_blocks))
  return _prompt(post.turns + (reply,), bot_name, COMMENTED, when, name_map,
                 tz)


def reblog_prompt(post: Thread, bot_name: str, when: When,
                  name_map: Optional[Mapping[str, str]] = None,
                  tz: datetime.tzinfo = datetime.timezone.utc) -> str:
  """The prompt for reblogging `post` with a comment."""
  return _prompt(post.turns, bot_name, COMMENTED, when, name_map, tz)


def text_post_prompt(bot_name: str, when: When,
                     tz: datetime.tzinfo = datetime.timezone.utc) -> str:
  """The prompt for an original text post."""
  return _prompt((), bot_name, POSTED, when, None, tz)


def own_turn_split(thread: Thread) -> Tuple[str, str]:
  """A formatted thread cut after its last turn's `tags:`: (the prompt the
  bot would have written that turn from, the turn's tags and text as the
  generator writes them). How the heads see a post."""
  document = format_thread(thread)
  last = thread.turns[-1]
  own_turn = document.rfind(f"#{len(thread.turns)} {last.author} {last.kind}:")
  cut = document.index("tags:", max(own_turn, 0)) + len("tags:")
  return document[:cut], document[cut:]


def next_author_split(prompt: str, blog: str) -> Tuple[str, str]:
  """A reblog prompt cut before the commenter's name: (the thread up to
  `#N`, ` BLOG commented:`), to ask the generator how likely it is that
  `blog` writes next."""
  m = list(re.finditer(rf"(?m)^#\d+ {re.escape(blog)} {COMMENTED}:", prompt))
  if not m:
    raise ValueError(f"no turn of {blog} to cut the prompt at")
  cut = m[-1].start() + m[-1].group(0).index(" ")
  return prompt[:cut], f" {blog} {COMMENTED}:"


# ---- generated text back to posts -------------------------------------------

# A turn line the generator wrote on its own: everything from there is not
# the bot's post. Besides the exact `#N NAME VERB:`, the small models write
# it mangled: a number with a stray character or none (`O3 bardolph
# commented:`, `b asked:`): a line of at most a short number-ish word, one
# name and a turn verb. And the thread header, whole or its `| N posts |`.
_VERBS = "|".join((ASKED, RESPONDED, POSTED, COMMENTED))
TURN_DELIMITER = re.compile(
    r"(?:^|\n)(?:#\d+ [^\n]*? (?:%s):[ \t]*(?:\n|$)| Conversation between "
    r"|[ \t]*(?:[#\w]{0,3}\d{1,3}[#\w]{0,2}[ \t]+|#[ \t]*)?\w[\w.-]*[ \t]+"
    r"(?:%s):[ \t]*(?:\n|$))|\| \d+ posts? \||(?:^|\n)[ \t]*\d+ posts? \|"
    % (_VERBS, _VERBS))
# Where a continuation runs on past the bot's own post: a turn line or a
# post's tags line (`Written ... | NAME's tags:`, or any `'s tags:` the model
# wrote mid-line). The candidate screens (bot.choice) drop a candidate whose
# raw continuation has one.
TURN_DELIMITERS = (TURN_DELIMITER, re.compile(r"'s tags:"))


@dataclasses.dataclass(frozen=True)
class Generated:
  """A continuation of a prompt, read back: the tags and the post's text."""
  tags: List[str]
  body: str  # canonical text in the HTML subset


def split_continuation(continuation: str) -> Generated:
  """Reads ` #a, #b\\n\\nthe post<|endoftext|>...` after a prompt."""
  text = continuation.split(EOT, 1)[0]
  delimiter = TURN_DELIMITER.search(text)
  if delimiter:
    text = text[:delimiter.start()]
  tag_line, _, body = text.partition("\n")
  tags = []
  for tag in tag_line.split(","):
    tag = " ".join(tag.strip().lstrip("#").split())
    if tag and tag not in tags:
      tags.append(tag)
  return Generated(tags, html_subset.canonical_text(body))


def continuation_to_npf(continuation: str) -> dict:
  """Arguments for an NPF post (`content`, `tags`) from a continuation."""
  generated = split_continuation(continuation)
  return {"content": npf.text_to_content(generated.body),
          "tags": generated.tags}


def continuation_to_legacy_answer(continuation: str) -> dict:
  """Arguments for answering an ask the legacy way (`answer` HTML, `tags`)."""
  generated = split_continuation(continuation)
  blocks = [b for b in html_subset.text_to_blocks(generated.body)
            if not html_subset.is_placeholder(b)]
  return {"answer": html_subset.blocks_to_html(blocks),
          "tags": ",".join(generated.tags)}
