"""Runs a pipeline in this process and SIGKILLs it at one named event (the kill
drills of test_real_e2e and test_card_e2e).

  python tests/kill_drill.py POINT MODULE:FUNCTION ARGS_JSON WORKDIR
  python tests/kill_drill.py POINT launch.py ARGV_JSON WORKDIR

MODULE:FUNCTION(*ARGS) builds the config (the same function the test's unbroken
run uses), run in this process. `launch.py` runs the launcher with ARGV (which
names --workdir=WORKDIR too): the user's command, multi-process start included,
so every process of a multi-process run arms the same point and they die at the
same step. POINT picks where the process dies, by event, never by time:

  prepare:N            after N examples went to the prepared-data writer
  step:STAGE:N         once STAGE's metrics row for step N is written
  save:STAGE:N         during STAGE's checkpoint save of step N: everything is
                       written to Orbax's temporary folder, not yet renamed
  write:RELPATH        while writing WORKDIR/RELPATH: its temporary file is
                       written, not yet renamed
  none                 no kill

A point prefixed `pN/` (e.g. `p1/step:contrastive:3`) is armed only in process N
of a multi-process run; the other processes must notice that it died.

The hooks wrap the package's functions from outside; nothing in the package
knows about the drills. A point that is never reached lets the run finish
(exit 0), which the test sees: a drill that killed nothing fails.
"""

import importlib
import json
import os
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]


def _die(what: str):
  print(f"[kill_drill] SIGKILL {what}", flush=True)
  sys.stderr.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def _target(point: str) -> tuple[int | None, str]:
  """(the process a `pN/` point is armed in, or None for every process; the point)."""
  if point.startswith("p") and "/" in point:
    target, point = point.split("/", 1)
    return int(target[1:]), point
  return None, point


def _arm(point: str, workdir: str) -> None:
  target, point = _target(point)
  if target is not None and int(os.environ.get("JAX_PROCESS_ID", "0")) != target:
    return
  kind, *rest = point.split(":")
  if kind == "prepare":
    from sedl_jax.data import prepare
    n, examples = int(rest[0]), prepare._examples

    def counted(*args, **kwargs):
      for i, example in enumerate(examples(*args, **kwargs), 1):
        yield example
        if i == n:
          _die(f"after {n} prepared examples")
    prepare._examples = counted
  elif kind == "step":
    from sedl_jax.train import metrics
    stage, n, write = rest[0], int(rest[1]), metrics.MetricWriter.write

    def written(self, s, step, scalars):
      write(self, s, step, scalars)
      if s == stage and int(step) == n:
        _die(f"{stage} step {n}")
    metrics.MetricWriter.write = written
  elif kind == "save":
    from orbax.checkpoint._src.path import atomicity
    final = os.path.join(os.path.abspath(workdir), "checkpoints", rest[0], rest[1])
    cls = atomicity.AtomicRenameTemporaryPath
    finalize = cls.finalize

    async def killed(self, *args, **kwargs):
      if os.path.abspath(str(self.get_final())) == final:
        _die(f"saving {final}")
      return await finalize(self, *args, **kwargs)
    cls.finalize = killed
  elif kind == "write":
    from sedl_jax import atomic_io
    target, write_with = os.path.join(os.path.abspath(workdir), rest[0]), atomic_io.write_with

    def half_written(path, write):
      if os.path.abspath(path) != target:
        return write_with(path, write)

      def then_die(tmp):
        write(tmp)
        _die(f"writing {path}")
      return write_with(path, then_die)
    atomic_io.write_with = half_written
  elif kind != "none":
    raise SystemExit(f"unknown kill point {point!r}")


def main(point: str, config_fn: str, args_json: str, workdir: str) -> None:
  if config_fn == "launch.py":
    _arm(point, workdir)
    import launch
    from absl import app
    sys.argv = ["launch.py", *json.loads(args_json)]
    app.run(launch.main)
    return
  module, fn = config_fn.split(":")
  config = getattr(importlib.import_module(module), fn)(*json.loads(args_json))
  _arm(point, workdir)
  from sedl_jax import runner
  runner.run(config, workdir)


# The test side: run the drills, compare with an unbroken run.

def free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(point: str, config_fn: str, args: list, workdir, *, processes: int = 1,
          env=None) -> list[tuple[int, str]]:
  """Runs the drill script in `processes` processes (a localhost coordinator when
  more than one) and returns each one's (exit status, output)."""
  import subprocess
  cmd = [sys.executable, os.path.abspath(__file__), point, config_fn, json.dumps(args), str(workdir)]
  env = dict(os.environ if env is None else env)
  if processes > 1:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}", JAX_NUM_PROCESSES=str(processes))
  procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(env, JAX_PROCESS_ID=str(i)) if processes > 1 else env)
           for i in range(processes)]
  t0 = time.perf_counter()
  try:
    outs = [p.communicate(timeout=400)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  print(f"[kill_drill] {point}: {processes} process(es), {time.perf_counter() - t0:.1f} s")
  return [(p.returncode, out) for p, out in zip(procs, outs)]


def run(points, config_fn: str, args: list, workdir, *, processes: int = 1, env=None) -> list[str]:
  """One run per kill point, each SIGKILLed there (every process of it), then the
  same command to the end; each run restarts from what the last one left.
  Returns the last run's outputs."""
  for point in tuple(points) + ("none",):
    done = start(point, config_fn, args, workdir, processes=processes, env=env)
    killed = _target(point)[0] or 0
    for i, (rc, out) in enumerate(done):
      if point == "none":
        assert rc == 0, out[-3000:]
      elif i == killed:
        assert rc == -signal.SIGKILL and "[kill_drill] SIGKILL" in out, (point, rc, out[-3000:])
      else:  # it reached the point too, or its runtime aborted when a peer died
        assert rc != 0, (point, i, out[-3000:])
  return [out for _, out in done]


def saved_model(workdir, stage, step=None):
  """(step, the saved inference variables) of a stage's latest (or given)
  checkpoint, restored onto this process's first device: a multi-process run
  saved it sharded over another device topology."""
  import jax
  folder = os.path.join(workdir, "checkpoints", stage)
  if step is None:
    step = max(int(d) for d in os.listdir(folder) if d.isdigit())
  path = os.path.join(folder, str(step), "model")
  import orbax.checkpoint as ocp
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  saved = ocp.StandardCheckpointer().metadata(path).item_metadata
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), saved)
  return step, ocp.StandardCheckpointer().restore(path, target)


def _rows(workdir, stages) -> list:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows if r["stage"] in stages]


def assert_same_run(drilled, unbroken, stages, *, whole_run: bool = True) -> None:
  """Bit-equal final models of `stages`, their results and every metrics row of
  theirs once, equal; with `whole_run`, also the whole results, the report and every
  other stage's rows (else the drilled run ran only `stages`, the unbroken one more)."""
  import jax
  import numpy as np
  for stage in stages:
    (s1, m1), (s2, m2) = saved_model(drilled, stage), saved_model(unbroken, stage)
    assert s1 == s2, (stage, s1, s2)
    for a, b in zip(jax.tree.leaves(m1), jax.tree.leaves(m2), strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=stage)
  if whole_run:
    for name in ("results.json", os.path.join("report", "report.json")):
      if name != "results.json" and not os.path.exists(os.path.join(unbroken, name)):
        continue  # a run without the report stage
      a, b = (json.load(open(os.path.join(w, name))) for w in (drilled, unbroken))
      assert a == b, name
  else:
    a, b = (json.load(open(os.path.join(w, "results.json"))) for w in (drilled, unbroken))
    assert all(a[s] == b[s] for s in stages), stages
  every = {json.loads(line)["stage"] for w in (drilled, unbroken)
           for line in open(os.path.join(w, "metrics.jsonl"))}
  compared = every if whole_run else set(stages)
  assert _rows(drilled, compared) == _rows(unbroken, compared) and _rows(drilled, stages)
  # Nothing half-written is left: temporary files, Orbax's temporary folders.
  left = [os.path.join(d, f) for d, dirs, files in os.walk(drilled) for f in dirs + files
          if ".tmp-" in f or "orbax-checkpoint-tmp" in f]
  assert not left, left

if __name__ == "__main__":
  main(*sys.argv[1:])
