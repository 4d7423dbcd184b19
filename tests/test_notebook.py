"""notebooks/finetune_and_chat.ipynb: its .py twin is in step, and it runs
end to end on the CPU with the tiny preset (a Mastodon archive in, samples
with scores and a console that answers out), executed by nbclient in a real
Jupyter kernel as a user's Run All would."""

import json
import os
import re
import shutil
import urllib.request

import jupytext
import nbclient
import nbformat
import pytest

from bot.corpus import plays
from tests.processes import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "notebooks", "finetune_and_chat.ipynb")
TWIN = os.path.join(REPO, "notebooks", "finetune_and_chat.py")
ME = "hamlet"
PUBLIC = "https://www.w3.org/ns/activitystreams#Public"


def _cells(notebook):
  return [(c.cell_type, c.source.strip(), c.metadata.get("tags", []))
          for c in notebook.cells]


def test_the_py_twin_holds_the_same_cells():
  ipynb = jupytext.read(NOTEBOOK)
  py = jupytext.read(TWIN)
  assert _cells(ipynb) == _cells(py), (
      "notebooks/finetune_and_chat.{ipynb,py} differ: edit one and run "
      "`jupytext --sync notebooks/finetune_and_chat.py`")
  # Kept without outputs, so the repository holds no stale run.
  with open(NOTEBOOK, encoding="utf-8") as f:
    raw = nbformat.read(f, as_version=4)
  assert all(not c.get("outputs") for c in raw.cells if c.cell_type == "code")
  assert sum("parameters" in tags for _, _, tags in _cells(ipynb)) == 1


def mastodon_archive(folder) -> str:
  """A Mastodon export (outbox.json + actor.json, unpacked) whose statuses
  are Hamlet's speeches, some as replies to his own earlier ones."""
  me = f"https://example.social/users/{ME}"
  speeches = [s.text for scene in plays.all_scenes(["tragedies"])
              for s in scene.speeches if s.speaker == ME and
              len(s.text) > 40][:200]
  assert len(speeches) == 200
  notes = []
  for i, text in enumerate(speeches):
    paragraphs = "".join(f"<p>{line}</p>" for line in text.split("\n"))
    notes.append({"type": "Create", "actor": me, "object": {
        "type": "Note", "id": f"{me}/statuses/{i}",
        "published": f"2023-04-{1 + i // 24:02d}T{i % 24:02d}:00:00Z",
        "inReplyTo": f"{me}/statuses/{i - 1}" if i % 5 == 4 else None,
        "to": [PUBLIC], "content": paragraphs}})
  os.makedirs(folder)
  with open(os.path.join(folder, "outbox.json"), "w", encoding="utf-8") as f:
    json.dump({"@context": "https://www.w3.org/ns/activitystreams",
               "id": "outbox.json", "type": "OrderedCollection",
               "totalItems": len(notes), "orderedItems": notes}, f)
  with open(os.path.join(folder, "actor.json"), "w", encoding="utf-8") as f:
    json.dump({"type": "Person", "id": me, "preferredUsername": ME}, f)
  return folder


@pytest.mark.slow
def test_the_notebook_runs_on_a_cpu_with_the_tiny_preset(tmp_path):
  archive = mastodon_archive(str(tmp_path / "mastodon-export"))
  workdir = str(tmp_path / "run")
  port = free_port()
  # "auto" picks the tiny preset where there is no GPU (CI); where there
  # is one it would fetch a Hub model, so the tiny preset is named.
  preset = "tiny" if shutil.which("nvidia-smi") else "auto"
  notebook = jupytext.read(NOTEBOOK)
  at = next(i for i, c in enumerate(notebook.cells)
            if "parameters" in c.metadata.get("tags", []))
  # What papermill does: the run's parameters in a cell after the defaults.
  notebook.cells.insert(at + 1, nbformat.v4.new_code_cell(
      f"ARCHIVE = {archive!r}\nKIND = 'mastodon'\nME = {ME!r}\n"
      f"BLOG = 'prince-bot'\nPRESET = {preset!r}\nSTEPS = 30\n"
      f"WORKDIR = {workdir!r}\nCANDIDATES = 3\nMAX_NEW_TOKENS = 24\n"
      f"PORT = {port}\nINSTALL = False\n"))
  # After the run: what the console answers, then stop it.
  notebook.cells.append(nbformat.v4.new_code_cell(
      "import urllib.request\n"
      "with urllib.request.urlopen(CONSOLE_URL, timeout=30) as r:\n"
      "  print('console status', r.status)\n"
      "CONSOLE.terminate()\nCONSOLE.wait(timeout=60)\n"
      "print('console exit', CONSOLE.returncode)"))
  client = nbclient.NotebookClient(
      notebook, timeout=900, kernel_name="python3",
      resources={"metadata": {"path": os.path.join(REPO, "notebooks")}})
  try:
    client.execute()
  finally:
    # The executed notebook, to read when this test fails.
    nbformat.write(notebook, str(tmp_path / "executed.ipynb"))
    # The console must not outlive a failed run.
    with pytest.raises(OSError):
      with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
        pass
  text = "\n".join(o.get("text", "") for c in notebook.cells
                   if c.cell_type == "code" for o in c.outputs)
  assert "preset tiny" in text
  # The import, the corpus under the bot's name, the training run.
  wrote = re.search(r"wrote (\d+) posts .* to \S*posts.jsonl", text)
  assert wrote and 150 <= int(wrote.group(1)) <= 200, text
  with open(os.path.join(workdir, "docs.jsonl"), encoding="utf-8") as f:
    docs = [json.loads(line)["text"] for line in f]
  assert docs and all("prince-bot" in d and ME not in d for d in docs)
  metrics = os.path.join(workdir, "train", "metrics.jsonl")
  with open(metrics, encoding="utf-8") as f:
    steps = [json.loads(line).get("step") for line in f]
  assert max(s for s in steps if s is not None) == 30
  assert os.path.getsize(os.path.join(workdir, "loss.png")) > 1000
  # Three candidates, each with the sentiment head's score.
  with open(os.path.join(workdir, "scored.jsonl"), encoding="utf-8") as f:
    scored = [json.loads(line) for line in f]
  assert len(scored) == 3
  for row in scored:
    assert -1.0 <= row["sentiment"] <= 1.0 and row["mean_logprob"] < 0
    assert "#2 prince-bot responded:" in row["prompt"]
  assert text.count("--- candidate") == 3
  # The console's link, answered, then stopped.
  assert f"the console of prince-bot: http://127.0.0.1:{port}/" in text
  assert "console status 200" in text
