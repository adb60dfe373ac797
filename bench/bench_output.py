"""Where every benchmark's JSON goes, and what each records about the machine."""

import json
import os
import platform


def machine() -> dict:
  return {"host": platform.node(), "cpu_count": os.cpu_count()}


def write(out_dir: str, name: str, result: dict) -> str:
  """Writes `out_dir/name.json` and prints it; returns the path."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{name}.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))
  return path
