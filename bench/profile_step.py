"""Where the contrastive train step's time goes, per XLA op, on this machine.

  python bench/profile_step.py --out=bench/results [--variant=quick] [--steps=5]
      [--dtype=config|float32|bfloat16] [--cpu_devices=auto|N]
      [--cpu_conv_kernels=auto|xla_default] [--cpu_conv_input_copy=auto|off] [--top=30]

Traces `--steps` steps of the step bench/contrastive_step.py measures with
`jax.profiler` (its Perfetto trace, no TensorFlow needed), sums every executed
op's time, and names each op from the compiled HLO: its opcode and the JAX
source path in its metadata (`transpose(jvp(...))` is the backward pass). Ops are
grouped into forward / backward convolutions, BatchNorm, the on-device
augmentation, the loss and the optimizer update. Times are summed over devices
(with one device per core, about cores x the step's wall time when both are busy).

With `--cpu_conv_kernels=auto` (the default: XLA's Eigen convolutions) the
convolutions are missing from the op events: Eigen runs them asynchronously and
their events last only the launch. Their time is in `not_in_op_events_ms_per_step`
(devices x wall time - op time, so idle time too); `--cpu_conv_kernels=xla_default`
shows every convolution as an op of its own.

Writes `profile_step.json` in --out: per group ms/step and share, the top ops,
and the trace folder (open its perfetto_trace.json.gz at ui.perfetto.dev).
"""

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

from absl import app, flags

import bench_output
import contrastive_step
import cpu_setup

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# --out and --steps (traced, after two warm-up steps) are bench/contrastive_step.py's
# flags, --cpu_devices and --cpu_conv_kernels bench/cpu_setup.py's, defined when imported.
_OUT, _STEPS = contrastive_step._OUT, contrastive_step._STEPS
_VARIANT = flags.DEFINE_string("variant", "quick", "Config variant (sedl.py) to profile.")
_DTYPE = flags.DEFINE_string("dtype", "config", "config | float32 | bfloat16.")
_TOP = flags.DEFINE_integer("top", 30, "Ops listed one by one.")

# `%name = type opcode(operands), ..., metadata={op_name="..." ...}`
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([a-z][\w\-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_WINDOW = re.compile(r"window=\{size=([\dx]+)")


def hlo_ops(hlo_text: str) -> dict:
  """{instruction name: (opcode, JAX op_name, fused computation's opcodes, largest
  convolution window in it (elements))}."""
  computations: dict[str, list] = {}
  current = None
  ops = {}
  for line in hlo_text.splitlines():
    head = _COMPUTATION.match(line)
    if head and "=" not in line.split("{")[0]:
      current = computations.setdefault(head.group(1), [])
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, opcode = m.groups()
    op_name = _OP_NAME.search(line)
    calls = _CALLS.search(line)
    window = _WINDOW.search(line)
    size = 0
    if window:
      size = 1
      for d in window.group(1).split("x"):
        size *= int(d)
    ops[name] = (opcode, op_name.group(1) if op_name else "", calls.group(1) if calls else None, size)
    if current is not None:
      current.append((opcode, op_name.group(1) if op_name else "", size))
  out = {}
  for name, (opcode, op_name, calls, size) in ops.items():
    inner = computations.get(calls, []) if calls else []
    if not op_name:  # a fusion's own metadata can be empty: take its body's first
      op_name = next((o for _, o, _ in inner if o), "")
    size = max([size] + [w for _, _, w in inner])
    out[name] = (opcode, op_name, tuple(sorted({o for o, _, _ in inner})), size)
  return out


def group(name: str, opcode: str, op_name: str, inner: tuple, window: int) -> str:
  """One op's group, from its XLA name and opcode, its fused body and its JAX
  source path. XLA drops the source path of some rewritten ops: a convolution
  without one whose window is larger than any kernel (3 x 3) is a weight gradient
  (its window is the activation map)."""
  backward = "transpose(" in op_name
  path = op_name.lower()
  if "augment" in path or "random_bits" in path or "threefry" in path:
    return "augmentation (on device)"
  if opcode == "convolution" or "convolution" in inner:
    if not op_name:
      return "conv backward (weight gradients)" if window > 9 else "conv (source not kept by XLA)"
    return "conv backward" if backward else "conv forward"
  if name.startswith(("transpose", "copy")) or opcode in ("transpose", "copy"):
    return "layout transposes and copies"
  if "batchnorm" in path or "/bn" in path or "norm" in path.rsplit("/", 2)[-2:][0]:
    return "BatchNorm backward" if backward else "BatchNorm forward"
  if opcode == "dot" or "dot" in inner:
    return "matmul backward (heads, loss)" if backward else "matmul forward (heads, loss)"
  if "jvp(" in op_name or backward:
    return "other layers' elementwise (ReLU, pooling, adds)"
  if any(k in path for k in ("adam", "optax", "scale_by", "update", "sqrt")):
    return "optimizer update"
  if opcode in ("all-reduce", "all-gather", "reduce-scatter", "collective-permute"):
    return "collectives (data parallel)"
  return "other (loss, optimizer, bookkeeping)"


def trace_events(folder: str, module_prefix: str) -> list[dict]:
  path = glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"), recursive=True)
  if not path:
    raise FileNotFoundError(f"jax.profiler wrote no perfetto_trace.json.gz under {folder}")
  with gzip.open(sorted(path)[-1]) as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  return [e for e in events if e.get("ph") == "X"
          and str(e.get("args", {}).get("hlo_module", "")).startswith(module_prefix)
          and e.get("args", {}).get("hlo_op")]


def main(argv):
  setup = cpu_setup.apply([32, 128])
  import jax
  built = contrastive_step.build(_VARIANT.value, _DTYPE.value)
  step, st, batch = built["step"], built["state"], built["batch"]
  compiled = step.lower(st, batch).compile()
  module = compiled.as_text().split("\n", 1)[0].split()[1].rstrip(",")
  ops = hlo_ops(compiled.as_text())
  for _ in range(2):
    st, m = step(st, batch)
  jax.block_until_ready(m)
  folder = tempfile.mkdtemp(prefix="profile_step_")
  t0 = time.perf_counter()
  with jax.profiler.trace(folder, create_perfetto_trace=True):
    for _ in range(_STEPS.value):
      st, m = step(st, batch)
    jax.block_until_ready(m)
  wall = (time.perf_counter() - t0) / _STEPS.value
  events = trace_events(folder, module)
  if not events:
    raise RuntimeError(f"no op events of module {module!r} in the trace under {folder}")
  per_op = collections.defaultdict(float)
  for e in events:
    per_op[e["args"]["hlo_op"]] += float(e["dur"]) / 1e3 / _STEPS.value  # us -> ms per step
  groups = collections.defaultdict(float)
  unnamed = 0.0
  for op, ms in per_op.items():
    opcode, op_name, inner, window = ops.get(op, ("?", "", (), 0))
    if op not in ops:
      unnamed += ms
    groups[group(op, opcode, op_name, inner, window)] += ms
  total = sum(per_op.values())
  top = sorted(per_op.items(), key=lambda kv: -kv[1])[:_TOP.value]
  result = {
      "benchmark": "profile_contrastive_step",
      "variant": _VARIANT.value, "dtype": _DTYPE.value,
      "batch": built["batch_size"], "image_size": built["config"].data.image_size,
      "backend": jax.default_backend(), "device_count": jax.device_count(),
      **setup, **bench_output.machine(),
      "wall_ms_per_step": 1e3 * wall,
      "images_per_s_while_tracing": 2 * built["batch_size"] / wall,
      "op_ms_per_step_summed_over_devices": total,
      "ops_not_found_in_hlo_ms": unnamed,
      # Eigen convolutions (--cpu_conv_kernels=auto) run asynchronously on XLA's
      # thread pool: their op events last only the launch, so their time is here.
      "not_in_op_events_ms_per_step": max(0.0, 1e3 * wall * jax.device_count() - total),
      "groups": {k: {"ms_per_step": v, "share": v / total}
                 for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
      "top_ops": [{"op": op, "ms_per_step": ms, "share": ms / total, "opcode": ops.get(op, ("?",))[0],
                   "jax_op_name": ops.get(op, ("", ""))[1][-160:]} for op, ms in top],
      "trace_folder": folder,
  }
  for k, v in result["groups"].items():
    print(f"{k:48s} {v['ms_per_step']:8.1f} ms/step  {100 * v['share']:5.1f}%")
  print(f"{'not in op events (Eigen convolutions, idle)':48s} "
        f"{result['not_in_op_events_ms_per_step']:8.1f} ms/step")
  bench_output.write(_OUT.value, "profile_step", result)


if __name__ == "__main__":
  app.run(main)
