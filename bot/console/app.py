"""The console's web page (Gradio): Write, Review and History tabs over a
`bot.console.core.Console`.

Everything a user wrote (asks, posts, candidates) reaches the page as text:
in text boxes, or in HTML built here with every value escaped, never as
markup of its own.

The candidates a Write produced are kept per browser session (`gr.State`):
what one tab sends is what that tab shows. Gradio's programmatic API (the
"Use via API" page, /gradio_api/info, /gradio_api/call/..., the MCP server)
is off unless `build` and `launch` are given `api=True`
(`launch.console --api`): its routes answer 403, so no other program can
post through the console by its API.
"""

import datetime
import html
import os

from bot.console.core import FORMS, MAX_CANDIDATES, Console, WriteSettings
from bot.records import written_by

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # pylint: disable=g-import-not-at-top,wrong-import-position
from starlette.middleware import Middleware  # pylint: disable=g-import-not-at-top,wrong-import-position

_CSS = """
.cand-table { border-collapse: collapse; width: 100%; font-size: 90%; }
.cand-table td, .cand-table th { border-top: 1px solid #ddd; padding: 4px;
  vertical-align: top; text-align: left; }
.cand-table td.text { white-space: pre-wrap; }
.cand-table tr.pick { background: #e8f6e8; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px;
  margin: 8px 0; }
.card .meta { color: #666; font-size: 85%; }
.card .input, .card .posted { white-space: pre-wrap; margin: 6px 0; }
.card .input { background: #eef; padding: 6px; border-radius: 4px; }
.scores { font-size: 85%; color: #333; }
.scores .pick { color: #070; font-weight: bold; }
"""


def _num(value) -> str:
  return "–" if value is None else f"{value:.3f}"


def _when(t) -> str:
  return datetime.datetime.fromtimestamp(
      float(t), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def candidates_html(entry: dict) -> str:
  """A table of a decision's candidates: text, scores, verdict, the pick."""
  esc = html.escape
  rows = []
  candidates = entry.get("candidates") or []
  # P(reject) where an autoreviewer scored the candidates.
  reviewed = any(c.get("p_reject") is not None for c in candidates)
  for i, c in enumerate(candidates):
    pick = i == entry.get("winner")
    p_reject = f"<td>{_num(c.get('p_reject'))}</td>" if reviewed else ""
    rows.append(
        f"<tr class='{'pick' if pick else ''}'><td>{i}{' ★' if pick else ''}"
        f"</td><td class='text'>{esc(c.get('text', ''))}</td>"
        f"<td>{_num(c.get('selector'))}</td><td>{_num(c.get('sentiment'))}"
        f"</td>{p_reject}<td>{esc(c.get('verdict', ''))}</td></tr>")
  return ("<table class='cand-table'><tr><th>#</th><th>candidate</th>"
          "<th>selector</th><th>sentiment</th>"
          + ("<th>P(reject)</th>" if reviewed else "") + "<th>verdict</th></tr>"
          + "".join(rows) + "</table>")


_POSTED = {"done": "posted", "dry_run": "would post", "drafted": "drafted"}


def card_html(job, entry: dict, posted: str = "") -> str:
  esc = html.escape
  entry = entry or {}
  meta = " · ".join(esc(str(x)) for x in (
      _when(entry.get("t", job.updated)), job.kind, job.key, job.status,
      f"retries {job.retries}") if x)
  out = [f"<div class='card'><div class='meta'>{meta}</div>",
         f"<div class='input'>{esc(entry.get('prompt_shown', ''))}</div>"]
  if posted:
    out.append(f"<div class='posted'><b>{_POSTED.get(job.status, job.status)}"
               f":</b> {esc(posted)}</div>")
  out.append(f"<div class='meta'>{esc(entry.get('reason', ''))}</div>")
  if written_by(entry):
    out.append(f"<div class='meta by'>{esc(written_by(entry))}</div>")
  out.append(candidates_html(entry) + "</div>")
  return "".join(out)


def _scores_html(written, i: int) -> str:
  esc = html.escape
  c = written.candidates[i]
  hits = written.hits[i]
  mood = choice_mood(c, written.sentiment_range)
  parts = [f"selector {_num(c.selector)}", f"sentiment {_num(c.sentiment)}",
           *([f"P(reject) {_num(c.p_reject)}"] if c.p_reject is not None
             else []),
           f"filters: {esc(c.verdict if not c.verdict.startswith('mood:') else 'kept')}",
           f"mood: {esc(mood)}",
           f"word list: {esc(', '.join(hits)) if hits else 'no hit'}"]
  pick = ("<span class='pick'>★ the bot's pick</span><br>"
          if i == written.pick else "")
  return f"<div class='scores'>{pick}{'<br>'.join(parts)}</div>"


def choice_mood(candidate, allowed: tuple) -> str:
  from bot import choice  # pylint: disable=import-outside-toplevel
  return choice.mood_screen(candidate, allowed)


# Gradio's routes for programs rather than the page (under /gradio_api/):
# the API's description, its calls by name, and the MCP server.
_API_ROUTES = ("info", "openapi.json", "call", "run", "api", "mcp")


class _ApiClosed:
  """ASGI middleware: answers 403 to Gradio's programmatic API routes. The
  page itself talks to the server through /gradio_api/queue/, which stays."""

  def __init__(self, asgi_app):
    self.app = asgi_app

  async def __call__(self, scope, receive, send):
    parts = scope.get("path", "").strip("/").split("/")
    if parts[0] == "gradio_api":
      parts = parts[1:]
    if scope["type"] == "http" and parts and parts[0] in _API_ROUTES:
      await send({"type": "http.response.start", "status": 403,
                  "headers": [(b"content-type", b"text/plain")]})
      await send({"type": "http.response.body",
                  "body": b"the console's API is off (launch.console --api)"})
      return
    await self.app(scope, receive, send)


def _events(api: bool) -> dict:
  """What every event of the page is given: in the API, or not."""
  return {"api_visibility": "public" if api else "private"}


def launch(page: "gr.Blocks", host: str, port: int, password: str = "",
           block: bool = True, api: bool = False):
  """Serves the page; with a password, user `operator` must log in. Fonts
  are the system's: the page fetches nothing from the internet. Without
  `api`, Gradio's programmatic API is closed (build the page with the same
  `api`)."""
  theme = gr.themes.Base(font=[gr.themes.Font("sans-serif")],
                         font_mono=[gr.themes.Font("monospace")])
  closed = {} if api else {
      "footer_links": ["gradio", "settings"],  # no "Use via API"
      "app_kwargs": {"middleware": [Middleware(_ApiClosed)]}}
  return page.queue().launch(
      server_name=host, server_port=port, quiet=True, show_error=True,
      auth=("operator", password) if password else None, theme=theme,
      css=_CSS, prevent_thread_lock=not block, mcp_server=False, **closed)


def build(console: Console, api: bool = False) -> "gr.Blocks":
  """The page over `console`; `api` puts its events in Gradio's API (which
  `launch` must then open too)."""
  events = _events(api)
  cfg = console.config
  title = f"{cfg.blog}: the console" + (" (dry run)" if console.dry_run
                                        else "")
  with gr.Blocks(title=title, analytics_enabled=False) as page:
    gr.Markdown(f"### {html.escape(title)}")
    with gr.Tab("Write", id="write-tab"):
      _write_tab(console, events)
    with gr.Tab("Review", id="review-tab"):
      _review_tab(console, events)
    with gr.Tab("History", id="history-tab") as history_tab:
      refresh_history = _history_tab(console, events)
    history_tab.select(**refresh_history)
  return page


def _write_tab(console: Console, events: dict) -> None:
  s = WriteSettings(max_new_tokens=console.max_new_tokens())
  with gr.Row():
    form = gr.Radio(list(FORMS), value="ask", label="prompt", elem_id="form")
    name = gr.Textbox(label="from (a blog name)", value="anonymous",
                      elem_id="name")
  text = gr.Textbox(label="the ask, or the reply", lines=2, elem_id="text")
  post = gr.Textbox(label="the post replied to", lines=2, elem_id="post")
  tags = gr.Textbox(label="tags of an original post (comma separated)",
                    elem_id="tags")
  raw = gr.Textbox(label="raw prompt, in the text format", lines=3,
                   elem_id="raw")
  with gr.Accordion("sampling", open=False):
    with gr.Row():
      temperature = gr.Slider(0, 2, s.temperature, step=0.05,
                              label="temperature")
      top_p = gr.Slider(0.05, 1, s.top_p, step=0.01, label="top-p")
      top_k = gr.Slider(0, 200, s.top_k, step=1, label="top-k (0: off)")
      typical_p = gr.Slider(0.05, 1, s.typical_p, step=0.01,
                            label="typical-p (1: off)")
    with gr.Row():
      breakruns = gr.Slider(0, 0.2, s.breakruns_tau, step=0.005,
                            label="breakruns tau")
      mirostat = gr.Slider(0, 10, s.mirostat_tau, step=0.1,
                           label="Mirostat tau (0: off)")
      n = gr.Slider(1, MAX_CANDIDATES, s.n, step=1, label="N")
      max_new = gr.Slider(8, max(2048, s.max_new_tokens), s.max_new_tokens,
                          step=8,
                          label="max new tokens")
      seed = gr.Number(value=s.seed, precision=0, label="seed")
  write = gr.Button("write", variant="primary", elem_id="write")
  boxes, scores, columns = [], [], []
  with gr.Row():
    for i in range(MAX_CANDIDATES):
      with gr.Column(visible=i < s.n, min_width=160) as column:
        boxes.append(gr.Textbox(label=f"candidate {i}", lines=6,
                                interactive=False, elem_id=f"candidate-{i}"))
        scores.append(gr.HTML(elem_id=f"scores-{i}"))
      columns.append(column)
  verdict = gr.HTML(elem_id="verdict")
  with gr.Row():
    which = gr.Number(value=0, precision=0, label="candidate to send",
                      elem_id="send-which")
    state = gr.Radio(["draft", "published"], value="draft", label="as",
                     elem_id="send-state")
    send = gr.Button("send to the blog", elem_id="send",
                     interactive=not console.dry_run)
  sent = gr.Textbox(label="sent", interactive=False, elem_id="sent")
  # This browser session's last Write (a core.Written, with its candidates'
  # job keys): what its "send" sends, whatever other tabs write.
  written_now = gr.State(None)

  def run(form_, name_, text_, post_, tags_, raw_, temperature_, top_p_,
          top_k_, typical_p_, breakruns_, mirostat_, n_, max_new_, seed_):
    count = int(n_)
    shown = [gr.update(visible=i < count) for i in range(MAX_CANDIDATES)]
    # The boxes are about to show new candidates: until they are judged,
    # there is nothing to send.
    yield shown + [gr.update()] * (2 * MAX_CANDIDATES + 1) + [None]
    try:
      prompt, said, author = console.prompt(form_, name_, text_, post_, tags_,
                                            raw_)
      settings = WriteSettings(temperature_, top_p_, int(top_k_), typical_p_,
                               breakruns_, mirostat_, count, int(max_new_),
                               int(seed_ or 0))
      for texts, written in console.write(prompt, said, author, settings):
        texts = texts + [""] * (MAX_CANDIDATES - len(texts))
        score_html = [""] * MAX_CANDIDATES
        summary = ""
        if written is not None:
          for i in range(len(written.candidates)):
            score_html[i] = _scores_html(written, i)
          summary = (f"<p>the bot would pick <b>{written.pick}</b>: "
                     f"{html.escape(written.reason)}; mood "
                     f"{written.mood:.2f}</p>" if written.pick is not None
                     else "<p>no candidate passes the bot's screens</p>")
        yield shown + texts + score_html + [summary, written]
    except Exception as e:  # pylint: disable=broad-except
      yield shown + [""] * (2 * MAX_CANDIDATES) + [
          f"<p>error: {html.escape(str(e))}</p>", None]

  def send_one(written, which_, state_):
    return console.send(written, int(which_ or 0), state_)

  write.click(run, [form, name, text, post, tags, raw, temperature, top_p,
                    top_k, typical_p, breakruns, mirostat, n, max_new, seed],
              columns + boxes + scores + [verdict, written_now], **events)
  # One send at a time, from every tab (the state's lock would order them
  # anyway); a second send of a candidate says it was already sent.
  send.click(send_one, [written_now, which, state], sent, api_name="send",
             concurrency_id="send", concurrency_limit=1, **events)


def _review_tab(console: Console, events: dict) -> None:
  refresh = gr.Button("refresh", elem_id="review-refresh")
  jobs = gr.Dropdown(label="parked for you", choices=[], elem_id="parked",
                     interactive=True)
  card = gr.HTML(elem_id="review-card")
  edit = gr.Textbox(label="the text to post (edit it, then accept)", lines=5,
                    elem_id="review-text")
  with gr.Row():
    accept = gr.Button("accept", variant="primary", elem_id="accept")
    retry = gr.Button("new candidates", elem_id="retry")
    reject = gr.Button("reject", variant="stop", elem_id="reject")
  status = gr.Textbox(label="what happened", interactive=False,
                      elem_id="review-status")

  def listing(selected=None):
    parked = console.parked()
    choices = [(f"{job.key} · {(entry or {}).get('prompt_shown', '')[:60]}",
                job.key) for job, entry in parked]
    keys = [k for _, k in choices]
    value = selected if selected in keys else (keys[0] if keys else None)
    return [gr.update(choices=choices, value=value)] + show(value)

  def show(key):
    for job, entry in console.parked():
      if job.key == key:
        entry = entry or {}
        winner = entry.get("winner")
        cands = entry.get("candidates") or []
        text = (cands[winner]["text"] if winner is not None and cands
                else (job.plan.text if job.plan else ""))
        return [card_html(job, entry), text]
    return ["<p>nothing is waiting for you</p>", ""]

  def decide(action):
    def handler(key, text):
      if not key:
        return ["choose a parked job first"] + listing(None)
      return [console.decide(key, action, text)] + listing(key)
    return handler

  outputs = [jobs, card, edit]
  ordered = dict(concurrency_id="review", concurrency_limit=1,
                 trigger_mode="always_last", **events)
  refresh.click(listing, jobs, outputs, **ordered)
  jobs.input(show, jobs, [card, edit], **ordered)
  for button, action in ((accept, "accept"), (retry, "retry"),
                         (reject, "reject")):
    button.click(decide(action), [jobs, edit], [status] + outputs, **ordered)


def _history_tab(console: Console, events: dict) -> dict:
  with gr.Row():
    search = gr.Textbox(label="search by user or text", elem_id="search")
    go = gr.Button("search", elem_id="search-go")
  listing = gr.HTML(elem_id="history")
  with gr.Row():
    mood = gr.Image(label="mood over the last days", type="filepath",
                    interactive=False, elem_id="mood")
    movers = gr.HTML(elem_id="movers")
  curves = gr.Image(label="the generator's training curves",
                    type="filepath", interactive=False,
                    visible=bool(console.workdir), elem_id="curves")

  def fill(query):
    cards = [card_html(job, entry, job.plan.text if job.plan else "")
             for job, entry in console.history(query or "")]
    path, up, down = console.mood()
    moved = []
    for title, events in (("lifted the mood most", up),
                          ("brought it down most", down)):
      items = "".join(f"<li>{html.escape(e['said'])} ({e['u']:+.2f})</li>"
                      for e in events)
      moved.append(f"<p><b>{title}</b></p><ul>{items or '<li>–</li>'}</ul>")
    return (("".join(cards) or "<p>nothing posted yet</p>"), path,
            "".join(moved), console.curves())

  # One queue for the history's events, so their answers come in order, and
  # a search made while one runs is run after it (not dropped).
  refresh = dict(fn=fill, inputs=search,
                 outputs=[listing, mood, movers, curves],
                 concurrency_id="history", concurrency_limit=1,
                 trigger_mode="always_last", **events)
  go.click(**refresh)
  search.submit(**refresh)
  return refresh
