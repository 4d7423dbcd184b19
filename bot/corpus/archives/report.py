"""What an import gave, for a person deciding whether to train on it.

`words` counts the words of a turn; `other_language` tells a text written
in another language than `--lang` (langdetect, only where the text is long
enough to tell); `lengths` bins the posts by the words of one's own turn;
`html` writes the report as a page (counts, drops by reason, the histogram
as inline SVG, no script and no name: only numbers).
"""

import html as html_lib
import re
from typing import Dict, List, Sequence

# A turn's own words per post, binned: [1, 5), [5, 10), ... [1000, inf).
LENGTH_EDGES = (1, 5, 10, 20, 50, 100, 200, 500, 1000)
# langdetect guesses anything for "lol"; below this many letters a text is
# kept whatever its language.
MIN_LETTERS_FOR_LANGUAGE = 20

_NOT_WORDS = re.compile(r"https?://\S+|[@#]\w+|<[^>]*>")


def words(text: str) -> int:
  """Words in a turn's text (links, @handles, #tags and markup not
  counted)."""
  return len(_NOT_WORDS.sub(" ", text).split())


def language_detector(lang: str):
  """A function text -> True when the text is in another language than
  `lang` (an ISO 639-1 code, as langdetect names them)."""
  # pylint: disable-next=import-outside-toplevel
  from langdetect import DetectorFactory, detect_langs
  from langdetect.lang_detect_exception import LangDetectException  # pylint: disable=import-outside-toplevel
  DetectorFactory.seed = 0  # the same answer every run

  def other_language(text: str) -> bool:
    plain = _NOT_WORDS.sub(" ", text)
    if sum(c.isalpha() for c in plain) < MIN_LETTERS_FOR_LANGUAGE:
      return False
    try:
      guesses = detect_langs(plain)
    except LangDetectException:
      return False
    return all(g.lang.split("-")[0] != lang or g.prob < 0.2
               for g in guesses)

  return other_language


def known_languages() -> List[str]:
  """The codes langdetect knows (for --lang's error line)."""
  # pylint: disable-next=import-outside-toplevel
  from langdetect import detector_factory
  factory = detector_factory.DetectorFactory()
  factory.load_profile(detector_factory.PROFILES_DIRECTORY)
  return sorted({code.split("-")[0] for code in factory.get_lang_list()})


def lengths(counts: Sequence[int]) -> Dict[str, list]:
  """The histogram of `counts` over LENGTH_EDGES (posts of no words of
  their own fall in the first bin)."""
  bins = [0] * len(LENGTH_EDGES)
  for n in counts:
    i = sum(n >= edge for edge in LENGTH_EDGES[1:])
    bins[i] += 1
  return {"edges": list(LENGTH_EDGES), "counts": bins}


def _bin_label(edges: Sequence[int], i: int) -> str:
  if i + 1 < len(edges):
    return f"{edges[i]}–{edges[i + 1] - 1}"
  return f"{edges[i]}+"


def _svg(histogram: dict) -> str:
  """Bars of the histogram, with their counts and bin labels."""
  counts, edges = histogram["counts"], histogram["edges"]
  width, height, bar, gap, top, bottom = 640, 260, 56, 12, 24, 44
  peak = max(counts) or 1
  parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{height}" role="img" aria-label="posts by length">']
  for i, n in enumerate(counts):
    x = 16 + i * (bar + gap)
    h = round((height - top - bottom) * n / peak)
    y = height - bottom - h
    parts.append(f'<rect class="bar" x="{x}" y="{y}" width="{bar}" '
                 f'height="{h}" fill="#4a78b5"><title>{n} post{"" if n == 1 else "s"}</title>'
                 f'</rect>')
    parts.append(f'<text x="{x + bar / 2}" y="{y - 6}" '
                 f'text-anchor="middle">{n}</text>')
    parts.append(f'<text x="{x + bar / 2}" y="{height - bottom + 18}" '
                 f'text-anchor="middle">{_bin_label(edges, i)}</text>')
  parts.append(f'<text x="{width / 2}" y="{height - 6}" '
               f'text-anchor="middle">words of yours in a post</text>')
  parts.append("</svg>")
  return "".join(parts)


def _rows(counts: Dict[str, int]) -> str:
  return "".join(f"<tr><td>{html_lib.escape(why)}</td><td>{n:,}</td></tr>"
                 for why, n in sorted(counts.items()))


def guide(own_words: int) -> str:
  """A rough word on the corpus's size."""
  if own_words < 20_000:
    return (f"{own_words:,} words of yours is little: a fine-tune will learn "
            "your format and some phrases, and soon repeat you. Add more "
            "archives if you have them (prepare_corpus --posts takes "
            "several).")
  if own_words < 200_000:
    return (f"{own_words:,} words of yours is enough for a fine-tune to pick "
            "up your voice; watch the validation loss for overfitting.")
  return f"{own_words:,} words of yours is plenty for a fine-tune."


def html(report: dict, out: str) -> str:
  """The report as a page (no file of the archive named: platforms name
  them after the people in them)."""
  e = html_lib.escape
  sources = "".join(
      f"<tr><td>{e(name)}</td><td>{s['posts']:,}</td><td>{s['threads']:,}"
      f"</td><td>{s['words']:,}</td></tr>"
      for name, s in report["sources"].items() if s["posts"])
  skipped = report["skipped"]
  dropped = (f"<table><tr><th>dropped</th><th>items</th></tr>"
             f"{_rows(skipped)}</table>" if skipped else
             "<p>Nothing was dropped.</p>")
  alone = (f"<h2>Kept without their context</h2><table><tr><th>kept alone"
           f"</th><th>posts</th></tr>{_rows(report['kept_alone'])}</table>"
           if report["kept_alone"] else "")
  if report["pseudonymized"]:
    privacy = (f"<p>Other people: {report['people_pseudonymized']:,} "
               f"pseudonymized ({report['names_replaced']:,} names "
               f"replaced).</p>")
  else:
    privacy = ("<p>Other people's names are kept as they are "
               "(<code>--pseudonymize</code> replaces them).</p>")
  lang = (f" Only posts in <code>{e(report['lang'])}</code> were kept."
          if report.get("lang") else "")
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Import report: {e(report['kind'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 720px;
       margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 14px 4px 0;
         text-align: left; }}
td + td, th + th {{ text-align: right; }}
svg text {{ font-size: 12px; fill: #333; }}
.guide {{ background: #f3f6fb; padding: 0.8em 1em; }}
</style></head><body>
<h1>{report['posts']:,} posts from your {e(report['kind'])} archive</h1>
<p>To <code>{e(out)}</code>:
{report['posts']:,} posts, {report['threads']:,} of them threads of several
turns, {report['words']:,} words of yours.{lang}</p>
<p class="guide">{e(guide(report['words']))}</p>
<table id="sources"><tr><th>source</th><th>posts</th><th>threads</th>
<th>words of yours</th></tr>{sources}</table>
<h2>Posts by length</h2>
{_svg(report['lengths'])}
<h2>What was left out</h2>
{dropped}
{alone}
<h2>Privacy</h2>
{privacy}
</body></html>
"""


def source_counts(items: Sequence[tuple]) -> Dict[str, Dict[str, int]]:
  """{"public posts" | "direct messages": {posts, threads, words}} from
  (direct, turns, own words) items."""
  out = {name: {"posts": 0, "threads": 0, "words": 0}
         for name in ("public posts", "direct messages")}
  for direct, turns, own in items:
    s = out["direct messages" if direct else "public posts"]
    s["posts"] += 1
    s["threads"] += turns > 1
    s["words"] += own
  return out

