"""WhatsApp: a chat's "Export chat" (without or with media), as text.

iOS shares a zip (`WhatsApp Chat - <name>.zip`) holding `_chat.txt`;
Android a `WhatsApp Chat with <name>.txt` (in the phone's language:
`Chat WhatsApp s <name>.txt`, ...), alone or zipped with the media. Each
message starts a line with its time, in the phone's locale:

    [20/09/2021, 11:29:43] Bob Smith: text          (iOS)
    [9/20/21, 11:29:43 AM] Bob Smith: text          (iOS, US)
    20/09/2021, 11:29 - Bob Smith: text             (Android)
    9/20/21, 11:29 AM - Bob Smith: text             (Android, US)
    20.09.21, 11:29 - Bob Smith: text               (Android, German)

and runs on over the following lines until the next such line. Day and
month are told apart by the file's dates (a first number over 12 is a
day, a second one a month); where none tells, a 12-hour clock written `AM`
/ `PM` means month first (the US), anything else day first. Times carry no
zone and are taken as UTC.

WhatsApp's own lines are skipped and counted: the encryption notice, "X
added Y", "X left", changed subjects and security codes (a line with no
author, or, on iOS, a text that starts with the invisible U+200E mark),
deleted messages, and media left out of the export (`<Media omitted>`,
`image omitted`, `<attached: ...>`, `IMG-....jpg (file attached)`; a
caption on the lines after a file is kept). The chat becomes conversation
threads (`common.conversation_threads`); `--me` is one's name as the
export writes it. Every chat is private: pseudonymized by default.
"""

import collections
import datetime
import hashlib
import os
import re
from typing import List, Optional, Tuple

from bot.corpus.archives import common

KIND = "whatsapp"
NAME = "a WhatsApp chat export"
EXPECTED = ("_chat.txt or WhatsApp Chat with <name>.txt (WhatsApp's Export "
            "chat)")

SYSTEM = "WhatsApp's own lines (encryption notice, joins, deleted messages)"
MEDIA = "messages of only media (left out of the export)"

_MARKS = "\u200e\u200f"  # left-to-right and right-to-left marks
# One message's first line: its date and time, then the rest.
_HEADER = re.compile(
    r"^\[?(?P<date>\d{1,4}[./-] ?\d{1,2}[./-] ?\d{1,4})\.?,? "
    r"(?:[^\d\s]{1,4} )?"  # "à", "klo", "um" before the time in some locales
    r"(?P<time>\d{1,2}[:.]\d{2}(?:[:.]\d{2})?)"
    r"(?:[ \u202f\u00a0]?(?P<ampm>[aApP]\.? ?[mM]\.?))?"
    r"(?:\]|:| -) (?P<rest>.*)$")
_AUTHOR = re.compile(r"^(?P<author>[^:\n]{1,100}?): (?P<text>.*)$",
                     re.DOTALL)
_DATE_PARTS = re.compile(r"[./-] ?")
# Media the export left out, or named where it was included.
_ANDROID_MEDIA = re.compile(r"^(?:<[^<>\n]+>|\S[^\n]*\.\w{2,5} \([^()\n]+\))$")
_IOS_MEDIA = re.compile(r"\u200e(?:<attached: [^>]+>|[^\u200e\n]* omitted)$")
# What Android writes, in English, for a message that is no longer there.
_GONE = {"this message was deleted", "you deleted this message", "null",
         "waiting for this message"}
# Names in WhatsApp's own lines (English): "Bob added Carol", "Bob left".
_NAMED = (re.compile(r"^(?P<a>.+?) (?:added|removed) (?P<b>.+)$"),
          re.compile(r"^(?P<a>.+?) (?:left|created (?:this )?group.*|changed (?:the "
                     r"subject|this group's|the group) .*|joined using this "
                     r"group's invite link)$"))
_YOU = {"you", "you're"}
# "WhatsApp Chat with Bob.txt" (Android), "WhatsApp Chat - Bob" (iOS).
_CHAT_WITH = re.compile(r"^WhatsApp Chat (?:with|-) (?P<name>.+?)(?:\.txt)?$",
                        re.IGNORECASE)




def _lines(text: str) -> List[Tuple[tuple, str]]:
  """[(the header's (date, time, ampm), the rest of the message)]: lines
  before the first header (none in an export) are left out."""
  out: List[Tuple[tuple, str]] = []
  for line in text.replace("\r\n", "\n").split("\n"):
    match = _HEADER.match(line.lstrip(_MARKS))
    if match:
      out.append(((match["date"], match["time"], match["ampm"]),
                  match["rest"]))
    elif out:
      out[-1] = (out[-1][0], out[-1][1] + "\n" + line)
  return out


def _day_first(headers: List[tuple]) -> bool:
  """Whether the file's dates put the day first (see the module doc)."""
  firsts, seconds = [], []
  for date, _, _ in headers:
    parts = _DATE_PARTS.split(date)
    if len(parts[0]) < 4:
      firsts.append(int(parts[0]))
      seconds.append(int(parts[1]))
  if any(n > 12 for n in firsts):
    return True
  if any(n > 12 for n in seconds):
    return False
  return not any(ampm and ampm[0] in "AP" for _, _, ampm in headers)


def _timestamp(header: tuple, day_first: bool) -> Optional[int]:
  date, time, ampm = header
  parts = [int(p) for p in _DATE_PARTS.split(date)]
  if len(str(_DATE_PARTS.split(date)[0])) == 4:
    year, month, day = parts
  elif day_first:
    day, month, year = parts
  else:
    month, day, year = parts
  if year < 100:
    year += 2000
  clock = [int(p) for p in re.split(r"[:.]", time)] + [0]
  hour, minute, second = clock[:3]
  if ampm:
    pm = ampm.lower().startswith("p")
    hour = hour % 12 + (12 if pm else 0)
  try:
    return common.timestamp_of(datetime.datetime(year, month, day, hour,
                                                 minute, second))
  except ValueError:
    return None


def _names_in_notice(text: str) -> List[str]:
  """The people an English notice of WhatsApp's names."""
  for pattern in _NAMED:
    match = pattern.match(text.strip(_MARKS + " "))
    if match:
      names = [n.strip(_MARKS + " ") for n in match.groupdict().values()
               if n]
      return [n for n in names if n.lower() not in _YOU]
  return []


def _text(rest: str, skipped: collections.Counter
          ) -> Optional[Tuple[str, str]]:
  """(author, canonical text) of a message, None (counted) for one of
  WhatsApp's own lines or media alone."""
  match = _AUTHOR.match(rest)
  if not match:
    skipped[SYSTEM] += 1
    return None
  author = match["author"].strip(_MARKS + " ")
  text = match["text"]
  first, _, after = text.partition("\n")
  if _IOS_MEDIA.search(first) or _ANDROID_MEDIA.match(first.strip()):
    text = after  # the caption, if any
    if not text.strip():
      skipped[MEDIA] += 1
      return None
  elif text.startswith(tuple(_MARKS)) or text.strip().lower() in _GONE:
    skipped[SYSTEM] += 1
    return None
  return author or "unknown", common.text_of(common.plain_blocks(text))


def _chat(archive: common.Archive, name: str, options: common.Options,
          result: common.Result):
  lines = _lines(archive.read_text(name))
  day_first = _day_first([header for header, _ in lines])
  with_whom = _CHAT_WITH.match(os.path.basename(name))
  if with_whom:
    common.record_people(result, KIND, [
        (f"name:{with_whom['name'].lower()}", (with_whom["name"],))],
                         options)
  messages = []
  for number, (header, rest) in enumerate(lines):
    said = _text(rest, result.skipped)
    if said is None:
      notice = rest.split(": ", 1)[-1] if _AUTHOR.match(rest) else rest
      common.record_people(result, KIND, [
          (f"name:{n.lower()}", (n,)) for n in _names_in_notice(notice)],
                           options)
      continue
    author, text = said
    own = options.is_me(author, also=result.own_names)
    if not own:
      common.record_people(result, KIND, [(f"name:{author.lower()}",
                                           (author,))], options)
    messages.append(common.Message(author, text,
                                   _timestamp(header, day_first), own,
                                   str(number)))
  digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:12]
  common.conversation_threads(messages, options, f"{KIND}-{digest}", result,
                              direct=True)


def _chat_files(archive: common.Archive) -> List[str]:
  texts = [n for n in archive.names if n.lower().endswith(".txt")]
  named = [n for n in texts if os.path.basename(n) == "_chat.txt"
           or "whatsapp" in os.path.basename(n).lower()]
  if named:
    return named
  out = []
  for name in texts:
    head = archive.read_text(name)[:400].lstrip(_MARKS + "\ufeff")
    if _HEADER.match(head.split("\n", 1)[0]):
      out.append(name)
  return out


def read(archive: common.Archive, options: common.Options) -> common.Result:
  result = common.Result()
  files = _chat_files(archive)
  if not files:
    raise common.missing(archive, EXPECTED, NAME, KIND)
  for name in files:
    _chat(archive, name, options, result)
  return result
