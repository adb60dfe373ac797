"""Two real processes (localhost coordinator, gloo CPU collectives, one XLA device
each) run the tiny SEDL stages through launch.py on a CK+-style folder (prepared
by process 0 while the other waits; its pixels streamed from the cache, each
process reading its block of every batch), agree with one process on two
devices, and resume after a restart."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = "('contrastive','temporal','behaviour')"
# The raw-pixel probe is the same sklearn fit in every process and says nothing here.
ARGS = ["--config=configs/sedl.py:tiny", "--config.contrastive.log_every_steps=1", "--config.temporal.steps=2",
        "--config.behaviour.steps=2", "--config.contrastive.pixel_baseline=False"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir, steps: int, processes: int, stages=STAGES, extra=()):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  data = workdir.parent / "data"
  if not (data / "ck").exists():
    import data_fixtures as fx
    fx.ckplus_folder(str(data / "ck"), fx.faces(num_subjects=8, size=32))
  args = [sys.executable, "launch.py", f"--workdir={workdir}", *ARGS,
          "--config.data.name=named_folder", f"--config.data.path={data / 'ck'}",
          f"--config.data.cache_dir={data / 'cache'}", "--config.data.sequence_length=3",
          f"--config.stages={stages}", f"--config.contrastive.steps={steps}", *extra]
  if processes == 1:
    procs = [subprocess.Popen(args + ["--cpu_devices=2"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
  else:
    port = _free_port()
    procs = [subprocess.Popen(
        args + ["--cpu_devices=1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=dict(env, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                            JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(i)))
             for i in range(processes)]
  outs = [p.communicate(timeout=400)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def _params(workdir, stage="contrastive"):
  """The latest saved inference params, restored onto this process's one device
  (the checkpoint was written by another device topology)."""
  import jax
  folder = os.path.join(workdir, "checkpoints", stage)
  step = max(int(d) for d in os.listdir(folder) if d.isdigit())
  path = os.path.join(folder, str(step), "model")
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  saved = ocp.StandardCheckpointer().metadata(path).item_metadata
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), saved)
  return step, ocp.StandardCheckpointer().restore(path, target)["params"]


def _losses(workdir, stage="contrastive"):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["loss"] for r in rows if r["stage"] == stage and "loss" in r}


def test_two_processes_match_one_and_resume(tmp_path):
  two, one = tmp_path / "two", tmp_path / "one"
  outs = _launch(two, steps=2, processes=2)
  assert "[devices] 2 cpu device(s) in 2 process(es)" in outs[0]
  _launch(one, steps=2, processes=1, stages="('contrastive',)")
  # Step 1's loss is a function of the initial parameters and the global batch alone:
  # the same in both runs up to float32 summation order. Its largest sums (BN
  # statistics over 16 x 32 x 32 values) carry about sqrt(N) * eps = 1.5e-5 relative
  # error; 1e-4 leaves a margin and still catches a batch that is not global.
  a, b = _losses(two), _losses(one)
  assert abs(a[1] - b[1]) <= 1e-4 * abs(b[1]), (a, b)
  # Each Adam update is at most lr per element, so two runs that differ only in
  # summation order cannot be further apart than 2 * lr * steps.
  lr, steps = 5e-4, 2
  (s2, p2), (s1, p1) = _params(two), _params(one)
  assert s2 == s1 == 2
  for x, y in zip(jax_leaves(p2), jax_leaves(p1)):
    assert np.abs(x - y).max() <= 2 * lr * steps * (1 + 1e-6)
  for stage in ("contrastive", "temporal", "behaviour"):
    assert (two / "report" / f"{stage}.json").exists()
  report = json.load(open(two / "data_report.json"))
  assert report["images_in"] == "cache (read per batch)" and report["sequences"]["train"]["windows"]
  # Restarted with a longer contrastive stage (a change it must be told is
  # intended), both processes resume from step 2.
  outs = _launch(two, steps=4, processes=2, stages="('contrastive',)",
                 extra=("--allow_config_change",))
  assert _params(two)[0] == 4
  assert sorted(_losses(two)) == [1, 2, 3, 4]  # steps 1-2 from the first run, 3-4 resumed


def jax_leaves(tree):
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(tree)]
