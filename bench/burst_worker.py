"""Times bursts of a reference step script's `step()` on request (bench/torch_ratio.py).

  TORCH_VENV/bin/python bench/burst_worker.py SCRIPT ARG...

Runs SCRIPT with ARG... as its command line, once, as it runs alone (its own
timing is the warm-up), prints `ready`, then for every line N read from stdin runs
`step()` N times and prints the seconds it took. It imports nothing itself: it
runs with the interpreter of the reference's throwaway environment, so PyTorch
never becomes a dependency of the project.
"""

import sys
import time


def main() -> None:
  script, *args = sys.argv[1:]
  sys.argv = [script, *args]
  namespace = {"__name__": "__main__", "__file__": script}
  with open(script) as f:
    exec(compile(f.read(), script, "exec"), namespace)  # noqa: S102  (the reference step)
  step = namespace["step"]
  print("ready", flush=True)
  for line in sys.stdin:
    n = int(line)
    t0 = time.perf_counter()
    for _ in range(n):
      step()
    print(f"{time.perf_counter() - t0:.6f}", flush=True)


if __name__ == "__main__":
  main()
