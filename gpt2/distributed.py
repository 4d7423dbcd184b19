"""Joining a run over several processes: a roll call, then `jax.distributed`.

JAX's own start answers a process that never comes with a fatal abort (a
C++ stack trace, `DEADLINE_EXCEEDED ... RegisterTask`) that names nobody.
So before JAX starts, process 0 listens on the coordinator's port itself and
every other process reports there with its `--process_id`: when all have
arrived, process 0 lets them go, closes the port and starts JAX's
coordinator on it. A process missing at the deadline is one `UserError`
naming it, on every process that is there; a process 0 that never answers
is named by the others. The roll call uses the coordinator's own port, so
real hosts need no other port open.
"""

import errno
import logging
import socket
import time
from typing import Optional, Tuple

from gpt2.errors import UserError

DEFAULT_TIMEOUT_S = 300
_RETRY_S = 0.25
_GRACE_S = 10.0
_FLAG = "--initialization_timeout"


def _split(address: str) -> Tuple[str, int]:
  host, sep, port = address.rpartition(":")
  if not sep or not host or not port.isdigit():
    raise UserError(f"--coordinator_address={address} must be HOST:PORT")
  return host.strip("[]"), int(port)


def _listen(port: int, address: str) -> socket.socket:
  """A socket listening on every address at `port`, as JAX's coordinator
  binds (IPv6 and IPv4 where the host has both)."""
  for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "")):
    try:
      server = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
      continue
    try:
      server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      if family == socket.AF_INET6:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
      server.bind((host, port))
      server.listen(64)
      return server
    except OSError as e:
      server.close()
      if e.errno == errno.EADDRINUSE:
        raise UserError(f"process 0 cannot listen at {address}: the port is "
                        "in use (another run, or a process of an earlier "
                        "one still running?)") from e
  raise UserError(f"process 0 cannot listen on port {port} ({address})")


def _read_line(conn: socket.socket, deadline: float) -> Optional[str]:
  """One line from `conn` before `deadline` (None: closed or no line)."""
  data = b""
  while not data.endswith(b"\n") and len(data) < 512:
    left = deadline - time.monotonic()
    if left <= 0:
      return None
    conn.settimeout(left)
    try:
      chunk = conn.recv(512)
    except (socket.timeout, OSError):
      return None
    if not chunk:
      return None
    data += chunk
  try:
    return data.decode("ascii").strip()
  except UnicodeDecodeError:
    return "?"


def _missing(ids) -> str:
  ids = sorted(ids)
  return ("process " if len(ids) == 1 else "processes ") + ", ".join(
      map(str, ids))


def _roll_call_as_coordinator(address: str, num_processes: int,
                              timeout_s: float) -> None:
  _, port = _split(address)
  deadline = time.monotonic() + timeout_s
  arrived = {}  # process id -> its connection
  problem = None
  server = _listen(port, address)
  try:
    while len(arrived) < num_processes - 1 and problem is None:
      left = deadline - time.monotonic()
      if left <= 0:
        missing = set(range(1, num_processes)) - set(arrived)
        problem = (f"{_missing(missing)} of {num_processes} never arrived at "
                   f"{address} within {timeout_s:g} s ({_FLAG}); start each "
                   "with the same --coordinator_address and --num_processes "
                   "and its own --process_id")
        break
      server.settimeout(left)
      try:
        conn, _ = server.accept()
      except socket.timeout:
        continue
      line = _read_line(conn, min(deadline, time.monotonic() + 10)) or ""
      fields = line.split()
      if len(fields) != 3 or fields[0] != "gpt2-roll-call" or not all(
          f.isdigit() for f in fields[1:]):
        conn.close()  # not one of ours (a port scan, a stale client)
        continue
      pid, count = int(fields[1]), int(fields[2])
      if count != num_processes:
        problem = (f"process {pid} was started with --num_processes={count}, "
                   f"process 0 with --num_processes={num_processes}")
      elif not 0 < pid < num_processes:
        problem = (f"a process reported --process_id={pid}; with "
                   f"--num_processes={num_processes} the others are "
                   f"1..{num_processes - 1}")
      elif pid in arrived:
        problem = (f"two processes were started with --process_id={pid}")
      if problem:
        try:
          conn.sendall(f"no {problem}\n".encode())
        except OSError:
          pass
        conn.close()
      else:
        arrived[pid] = conn
    answer = f"no {problem}\n" if problem else "go\n"
    for conn in arrived.values():
      try:
        conn.sendall(answer.encode())
      except OSError:
        pass
    # Each process closes its end first, so the port is free of our
    # connections when JAX's coordinator binds it.
    for conn in arrived.values():
      _read_line(conn, time.monotonic() + 10)
      conn.close()
  finally:
    server.close()
  if problem:
    raise UserError(problem)


def _roll_call_as_member(address: str, num_processes: int, process_id: int,
                         timeout_s: float) -> None:
  host, port = _split(address)
  deadline = time.monotonic() + timeout_s
  while True:
    left = deadline - time.monotonic()
    if left <= 0:
      raise UserError(f"process 0 (the coordinator at {address}) did not "
                      f"answer process {process_id} within {timeout_s:g} s "
                      f"({_FLAG}); is it started, and is the address one "
                      "this host reaches?")
    try:
      conn = socket.create_connection((host, port), timeout=min(left, 5))
    except OSError:
      time.sleep(min(_RETRY_S, max(deadline - time.monotonic(), 0)))
      continue
    with conn:
      try:
        conn.sendall(f"gpt2-roll-call {process_id} {num_processes}\n".encode())
      except OSError:
        time.sleep(_RETRY_S)
        continue
      # Process 0 answers by its own deadline, which may be a moment after
      # ours: wait that moment for its word.
      answer = _read_line(conn, deadline + _GRACE_S)
    if answer == "go":
      return
    if answer and answer.startswith("no "):
      raise UserError(answer[3:])
    if answer is None:  # closed without a word: knock again until the end
      time.sleep(_RETRY_S)
      continue
    raise UserError(f"the coordinator at {address} answered process "
                    f"{process_id} with something other than this run's "
                    "roll call: is another program listening there?")


def roll_call(address: str, num_processes: int, process_id: int,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
  """Returns once all `num_processes` processes have reported at `address`
  (process 0 listening there); a `UserError` naming whoever is missing when
  `timeout_s` runs out, or a mismatch of the processes' flags."""
  if process_id == 0:
    _roll_call_as_coordinator(address, num_processes, timeout_s)
  else:
    _roll_call_as_member(address, num_processes, process_id, timeout_s)


def start(coordinator_address: Optional[str] = None,
          num_processes: Optional[int] = None,
          process_id: Optional[int] = None,
          timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
  """Joins this process to a multi-process run (`jax.distributed`), before
  anything else touches a device. Every process runs the same program on
  its own devices; process 0 hosts the coordinator at
  `coordinator_address` (HOST:PORT). On a TPU pod slice, or under SLURM,
  leave all three unset: JAX reads them from the platform."""
  import jax  # pylint: disable=import-outside-toplevel
  given = [v is not None for v in (coordinator_address, num_processes,
                                   process_id)]
  if any(given) and not all(given):
    raise UserError("--coordinator_address, --num_processes and "
                    "--process_id go together: give all three or none")
  if all(given) and not 0 <= process_id < num_processes:
    raise UserError(f"--process_id={process_id} must be in 0.."
                    f"{num_processes - 1} (--num_processes={num_processes})")
  if timeout_s <= 0:
    raise UserError(f"{_FLAG}={timeout_s:g} must be more than 0 seconds")
  if all(given) and num_processes > 1:
    started = time.monotonic()
    roll_call(coordinator_address, num_processes, process_id, timeout_s)
    logging.info("all %d processes arrived at %s in %.1f s", num_processes,
                 coordinator_address, time.monotonic() - started)
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=int(max(timeout_s, 1)))
  except (RuntimeError, ValueError) as e:
    raise UserError(f"cannot join the distributed run"
                    f"{' at ' + coordinator_address if coordinator_address else ''}"
                    f": {str(e).splitlines()[0]}") from e
  # The processes swap their devices' topology when the backend starts, each
  # waiting only minutes for the others': start it now, while all are here.
  jax.devices()
