"""Telegram and WhatsApp exports, and pseudonyms that catch what a reader
would see.

The exports are tests/data/telegram_export and tests/data/whatsapp_export
(their README says where each layout was checked; the people are made up:
the owner is Delta Whiskey, the others Bob Smith and Carol Crane). The
expected documents are written by hand from the text format's rules.
"""

import datetime
import json
import os
import re
import stat
import subprocess
import sys
import zipfile

import pytest

from bot.corpus import archives, documents
from bot.corpus.archives import common, whatsapp
from bot.filters import normalize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
TELEGRAM = os.path.join(DATA, "telegram_export")
WHATSAPP = os.path.join(DATA, "whatsapp_export")
ME = "Delta Whiskey"
# Every form of the others' names a reader would recognize.
OTHERS = ("Bob Smith", "Bob", "Smith", "bobsmith", "bob_smith", "Carol Crane",
          "Carol", "Crane", "carol_crane")


def document_texts(posts):
  return [d.text for d in documents.documents(
      [json.loads(json.dumps(p)) for p in posts], min_own_fraction=0.0)]


def zipped(path, folder, prefix=""):
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
    for where, _, names in os.walk(folder):
      for name in names:
        full = os.path.join(where, name)
        z.write(full, prefix + os.path.relpath(full, folder))
  return str(path)


def run_launch(*args):
  return subprocess.run([sys.executable, "-m", "launch.import_archive",
                         *args], cwd=REPO, capture_output=True, text=True,
                        timeout=60)


def names_left(written):
  """The others' names found in `written` as a reader would see them (any
  case, full-width, zero-width characters inside, spaces or not)."""
  seen = normalize(written)
  joined = re.sub(r"[\s._-]", "", seen)
  return [n for n in OTHERS
          if re.search(rf"(?<![^\W_]){re.escape(normalize(n))}(?![^\W_])",
                       seen)
          or (" " in n and re.sub(r"[\s._-]", "", normalize(n)) in joined)]


# ---- Telegram ----------------------------------------------------------------

TELEGRAM_DOCS = [
    " Conversation between Bob Smith and Delta Whiskey | 4 posts |\n"
    "#1 Bob Smith posted:\n\n"
    "did you finish the kettle poem?\n\n"
    "#2 Delta Whiskey commented:\n\n"
    "almost! it is called <i>steam</i>, I will send it tonight\n\n"
    "#3 Bob Smith commented:\n\n"
    "ＢＯＢ approves. also @carol_crane wants a copy\n\n"
    "#4 Delta Whiskey commented:\n\n"
    "Written 11 AM September 2021 | Delta Whiskey's tags:\n\n"
    'sure, tell Carol it goes up on <a href="https://deltawhiskey.example/'
    'poems">my page</a> first',
    # Six hours later: a reply to the first question brings it back, after
    # the long message about buns (kept as context however little of the
    # thread is the owner's).
    " Conversation between Bob Smith and Delta Whiskey | 3 posts |\n"
    "#1 Bob Smith posted:\n\n"
    "unrelated, but the bakery on the corner has started doing cardamom "
    "buns and I think about them constantly\n\n"
    "#2 Bob Smith commented:\n\n"
    "did you finish the kettle poem?\n\n"
    "#3 Delta Whiskey commented:\n\n"
    "Written 6 PM September 2021 | Delta Whiskey's tags:\n\n"
    "and yes, <b>the kettle poem is done</b>: three verses and a chorus, "
    "all about steam and patience",
    # The group, from Carol's question.
    " Conversation between Carol Crane and Delta Whiskey | 4 posts |\n"
    "#1 Carol Crane posted:\n\n"
    "who is reading first on friday?\n\n"
    "#2 Delta Whiskey commented:\n\n"
    "me! I have the kettle poem ready\n\n"
    "#3 Carol Crane commented:\n\n"
    "then b\u200bob_smith reads second, and #bob_smith_fan club brings "
    "snacks\n\n"
    "#4 Delta Whiskey commented:\n\n"
    "Written 8 PM September 2021 | Delta Whiskey's tags:\n\n"
    "perfect, see you both there, I will bring the good tea",
]


@pytest.mark.parametrize("layout", ["folder", "zip", "result.json"])
def test_telegram_full_export_as_desktop_writes_it(tmp_path, layout):
  folder = os.path.join(TELEGRAM, "DataExport_2021-09-22")
  path = {"folder": folder,
          "zip": zipped(tmp_path / "export.zip", folder,
                        "DataExport_2021-09-22/"),
          "result.json": os.path.join(folder, "result.json")}[layout]
  posts, report = archives.import_archive("telegram", path,
                                          common.Options(ME),
                                          pseudonymize=False)
  assert document_texts(posts) == TELEGRAM_DOCS
  assert [p["id"] for p in posts] == ["telegram-2000002-6",
                                      "telegram-2000002-8",
                                      "telegram-4000004-15"]
  assert report["skipped"] == {
      "messages of only media": 2,  # a photo, a sticker
      "service messages (joins, pins, calls)": 2}
  assert report["sources"]["direct messages"]["posts"] == 3


def test_telegram_owner_by_its_export_or_its_id(tmp_path):
  # The full export names its owner: --me may be any of their names.
  full = os.path.join(TELEGRAM, "DataExport_2021-09-22")
  posts, _ = archives.import_archive("telegram", full,
                                     common.Options("deltawhiskey"), False)
  assert len(posts) == 3 and all(
      p["blog_name"] == "deltawhiskey" for p in posts)
  # A single chat's export (the chat itself): --me by from_id.
  single = os.path.join(TELEGRAM, "ChatExport_2021-09-20")
  posts, report = archives.import_archive(
      "telegram", single, common.Options("user1000001"), False)
  texts = document_texts(posts)
  assert texts == [t.replace(ME, "user1000001") for t in TELEGRAM_DOCS[:2]]
  assert report["pseudonymized"] is False


def test_telegram_pseudonyms_are_one_person_per_user(tmp_path):
  folder = os.path.join(TELEGRAM, "DataExport_2021-09-22")
  posts, report = archives.import_archive(
      "telegram", folder, common.Options(ME), None,
      str(tmp_path / "posts.jsonl.pseudonym-key"))
  assert report["pseudonymized"] is True  # private chats: on by default
  # Carol as her contact, her @handle and the name a mention gives her is
  # one person; so is Bob as author, contact and zero-width spelling.
  assert report["people_pseudonymized"] == 2
  texts = document_texts(posts)
  carol = re.search(r"also @(\w+) wants", texts[0]).group(1)
  assert f"tell {carol} it goes up" in texts[0]
  bob = texts[0].split("#1 ")[1].split(" posted")[0]
  assert f"then {bob} reads second, and #{bob}_fan club" in texts[2]
  assert names_left("\n".join(texts) + json.dumps(report,
                                                  ensure_ascii=False)) == []


# ---- WhatsApp ----------------------------------------------------------------

IOS_DOC = (
    " Conversation between Bob Smith and Delta Whiskey | 4 posts |\n"
    "#1 Bob Smith posted:\n\n"
    "did you finish the kettle poem?\n\n"
    "#2 Delta Whiskey commented:\n\n"
    "almost! it has three verses now\nand a chorus, somehow\n\n"
    "#3 Bob Smith commented:\n\n"
    "BOB approves of choruses. bobsmith has spoken\n\n"
    "#4 Delta Whiskey commented:\n\n"
    "Written 11 AM September 2021 | Delta Whiskey's tags:\n\n"
    "ha, then I will read all of it to you on friday, chorus and all")
ANDROID_DOC = (
    " Conversation between Carol Crane and Delta Whiskey | 6 posts |\n"
    "#1 Carol Crane posted:\n\n"
    "who reads first on friday?\n\n"
    "#2 Delta Whiskey commented:\n\n"
    "me, with the kettle poem\n\n"
    "#3 Carol Crane commented:\n\n"
    "the poster for friday\n\n"  # the caption under the file
    "#4 Delta Whiskey commented:\n\n"
    "that poster is wonderful, who drew it?\n\n"
    "#5 Carol Crane commented:\n\n"
    "the #bob_smith_fan club did\n\n"
    "#6 Delta Whiskey commented:\n\n"
    "Written 12 PM September 2021 | Delta Whiskey's tags:\n\n"
    "tell them it is going on my fridge immediately")


def utc(*args):
  return int(datetime.datetime(*args, tzinfo=datetime.timezone.utc)
             .timestamp())


@pytest.mark.parametrize("layout", ["zip", "folder"])
def test_whatsapp_ios_day_first_with_seconds(tmp_path, layout):
  folder = os.path.join(WHATSAPP, "ios")
  path = (zipped(tmp_path / "WhatsApp Chat - Bob Smith.zip", folder)
          if layout == "zip" else folder)
  posts, report = archives.import_archive("whatsapp", path,
                                          common.Options(ME), False)
  assert document_texts(posts) == [IOS_DOC]
  # [20/09/2021, 11:33:00]: day first, taken as UTC.
  assert posts[0]["timestamp"] == utc(2021, 9, 20, 11, 33, 0)
  assert [t["post"]["timestamp"] for t in posts[0]["trail"]][:1] == [
      utc(2021, 9, 20, 11, 30, 2)]
  assert report["skipped"] == {
      "WhatsApp's own lines (encryption notice, joins, deleted messages)": 2,
      "messages of only media (left out of the export)": 1}


def test_whatsapp_android_us_month_first_twelve_hour(tmp_path):
  path = os.path.join(WHATSAPP, "android", "WhatsApp Chat with Poetry "
                      "Night.txt")  # the bare file, as Android shares it
  posts, report = archives.import_archive("whatsapp", path,
                                          common.Options(ME), False)
  assert document_texts(posts) == [ANDROID_DOC]
  assert posts[0]["timestamp"] == utc(2021, 9, 20, 12, 7)  # 9/20/21 12:07 PM
  assert report["skipped"] == {
      # encryption notice, created group, added Carol, added you, deleted
      "WhatsApp's own lines (encryption notice, joins, deleted messages)": 5,
      "messages of only media (left out of the export)": 1}


@pytest.mark.parametrize("lines, expected", [
    # German Android: dotted dates, day first.
    (["16.01.21, 23:09 - A: x"], (2021, 1, 16, 23, 9)),
    # Ambiguous dates: a 12-hour clock in capitals is the US, month first.
    (["3/4/21, 1:05 PM - A: x"], (2021, 3, 4, 13, 5)),
    # ... while lower-case am/pm (India, say) is day first.
    (["03/04/21, 1:05 am - A: x"], (2021, 4, 3, 1, 5)),
    # One later date past 12 tells the whole file.
    (["3/4/21, 10:00 - A: x", "3/13/21, 10:00 - A: y"], (2021, 3, 4, 10, 0)),
    # iOS without brackets (older), with seconds and the colon after them.
    (["7/1/16, 4:56:55 PM: A: x"], (2016, 7, 1, 16, 56, 55)),
])
def test_whatsapp_dates_by_locale(lines, expected):
  parsed = whatsapp._lines("\n".join(lines))  # pylint: disable=protected-access
  headers = [header for header, _ in parsed]
  day_first = whatsapp._day_first(headers)  # pylint: disable=protected-access
  assert whatsapp._timestamp(  # pylint: disable=protected-access
      headers[0], day_first) == utc(*expected)


# ---- pseudonyms: every form a reader would see --------------------------------


def dce_message(mid, author, time, content, **extra):
  return dict({"id": mid, "type": "Default", "timestamp":
               f"2023-04-05T{time}:00.000+00:00", "content": content,
               "author": author, "attachments": [], "mentions": []}, **extra)


def bob_dm_files():
  """A DiscordChatExporter DM with friend Bob Smith, named after him as the
  exporter names its files; the owner Delta Whiskey, and another friend
  who goes by Delta, the owner's first name."""
  bob = {"id": "22", "name": "bob_smith", "discriminator": "0000",
         "nickname": "Bob Smith", "isBot": False}
  me = {"id": "99", "name": "delta.w", "discriminator": "0000",
        "nickname": ME, "isBot": False}
  # His handle is his site's name: the site's address is left alone.
  other_delta = {"id": "33", "name": "ftrain", "discriminator": "0000",
                 "nickname": "Delta", "isBot": False}
  messages = [
      dce_message("1", bob, "10:00", "BOB here. bob, bobsmith, ＢＯＢ, "
                  "b\u200bob_smith and #bob_smith_fan all say hi to "
                  "@Delta Whiskey", mentions=[me]),
      dce_message("2", me, "10:01", "hi Bob! see https://www.ftrain.com/"
                  "kettles and https://bob_smith.tumblr.com/post/1 and "
                  "https://example.social/@bob_smith, and I will ask @Delta "
                  "too", mentions=[other_delta]),
  ]
  name = "Direct Messages - Bob Smith [555].json"
  return name, json.dumps({
      "guild": {"id": "0", "name": "Direct Messages"},
      "channel": {"id": "555", "type": "DirectTextChat", "name": "Bob Smith"},
      "messages": messages})


def test_pseudonyms_catch_every_form_and_spare_the_owner(tmp_path):
  name, export = bob_dm_files()
  folder = tmp_path / "dce"
  folder.mkdir()
  (folder / name).write_text(export)
  out = tmp_path / "posts.jsonl"
  written = ""
  for report in ("report.html", "report.json"):
    done = run_launch("--kind=discord", f"--archive={folder}", f"--me={ME}",
                      f"--out={out}", f"--report={tmp_path / report}",
                      "--pseudonymize")
    assert done.returncode == 0, done.stderr
    written += (done.stdout + done.stderr + out.read_text()
                + (tmp_path / report).read_text())
  posts = [json.loads(line) for line in out.read_text().splitlines()]
  (text,) = document_texts(posts)
  written += text
  assert names_left(written) == []
  assert re.search(r"I will ask @(\w+) too", text).group(1) not in (
      "Delta", "ftrain")  # the other Delta is pseudonymized
  assert written.count("ftrain") == written.count("www.ftrain.com")
  # The owner's names stay whole, though "Delta" is another's first name.
  assert "@Delta Whiskey" in text and "#2 Delta Whiskey commented" in text
  # An address keeps its site; only a handle in it is replaced.
  bob = text.split("#1 ")[1].split(" posted")[0]
  assert ('<a href="https://www.ftrain.com/kettles">https://www.ftrain.com/'
          'kettles</a>') in text
  assert f"https://{bob}.tumblr.com/post/1" in text
  assert f'https://example.social/@{bob}">' in text
  assert f"{bob} here. {bob}, {bob}, {bob}, {bob} and #{bob}_fan" in text
  # Nothing names the archive's files (DiscordChatExporter names them
  # after the friend).
  assert "[555]" not in done.stdout and "Bob" not in done.stdout


def test_a_key_file_others_can_read_stops_the_run(tmp_path):
  name, export = bob_dm_files()
  folder = tmp_path / "dce"
  folder.mkdir()
  (folder / name).write_text(export)
  out = tmp_path / "posts.jsonl"
  key = tmp_path / "posts.jsonl.pseudonym-key"
  key.write_text("ab" * 32 + "\n")
  key.chmod(0o644)
  done = run_launch("--kind=discord", f"--archive={folder}", f"--me={ME}",
                    f"--out={out}", "--pseudonymize")
  assert done.returncode == 2 and not out.exists()
  assert done.stderr == (f"error: {key} can be read by others (mode 644): "
                         "the key tells who every pseudonym is; chmod 600 "
                         "it and run again\n")
  key.chmod(0o600)
  assert run_launch("--kind=discord", f"--archive={folder}", f"--me={ME}",
                    f"--out={out}", "--pseudonymize").returncode == 0
  assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


@pytest.mark.parametrize("kind, name, data, expected", [
    ("discord", "Direct Messages - Bob Smith [555].json", b"{",
     "Direct Messages - … [555].json is not JSON at line 1"),
    ("tumblr", "conversations/convo_4f1e_marigold_bob-smith.html",
     b"\xff\xfe", "conversations/convo_4f1e_….html is not UTF-8 text "
                  "(byte 0)"),
    ("facebook", "messages/inbox/bobsmith_1234567/message_1.json", b"{",
     "messages/inbox/…_1234567/message_1.json is not JSON at line 1"),
])
def test_error_lines_name_no_one(tmp_path, kind, name, data, expected):
  path = tmp_path / "export" / name
  path.parent.mkdir(parents=True)
  path.write_bytes(data)
  done = run_launch(f"--kind={kind}", f"--archive={tmp_path / 'export'}",
                    f"--me={ME}", f"--out={tmp_path / 'posts.jsonl'}")
  assert done.returncode == 2
  assert done.stderr == f"error: {tmp_path}/export: {expected}\n"
  assert "bob" not in done.stderr.lower()


def test_a_whatsapp_zip_named_after_the_friend_is_not_named(tmp_path):
  path = tmp_path / "WhatsApp Chat - Bob Smith.zip"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("notes.md", "nothing here")
  done = run_launch("--kind=whatsapp", f"--archive={path}", f"--me={ME}",
                    f"--out={tmp_path / 'posts.jsonl'}")
  assert done.returncode == 2
  assert done.stderr == (
      f"error: {tmp_path}/WhatsApp ….zip has no _chat.txt or WhatsApp Chat "
      "with <name>.txt (WhatsApp's Export chat): not a WhatsApp chat export "
      "(--kind=whatsapp)\n")
