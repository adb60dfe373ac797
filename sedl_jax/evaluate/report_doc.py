"""A report built once and written twice: `report.md` (images by file name) and a
self-contained `report.html` (images embedded as base64, no external assets)."""

from __future__ import annotations

import base64
import html
import os

from sedl_jax import atomic_io


def fmt(value, digits: int = 3) -> str:
  """Table cell text: floats rounded, None as an em dash."""
  if value is None:
    return "—"
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return str(value)


class ReportDoc:
  def __init__(self, title: str):
    self.title = title
    self.blocks: list[tuple] = []

  def heading(self, text: str, level: int = 2) -> None:
    self.blocks.append(("heading", level, text))

  def para(self, text: str) -> None:
    self.blocks.append(("para", text))

  def bullets(self, items) -> None:
    self.blocks.append(("bullets", [str(i) for i in items]))

  def table(self, headers, rows) -> None:
    self.blocks.append(("table", list(headers), [[fmt(c) for c in r] for r in rows]))

  def image(self, filename: str, caption: str) -> None:
    self.blocks.append(("image", filename, caption))

  def code(self, text: str) -> None:
    self.blocks.append(("code", text))

  def markdown(self) -> str:
    out = [f"# {self.title}", ""]
    for b in self.blocks:
      kind = b[0]
      if kind == "heading":
        out += ["#" * b[1] + " " + b[2], ""]
      elif kind == "para":
        out += [b[1], ""]
      elif kind == "bullets":
        out += [f"- {i}" for i in b[1]] + [""]
      elif kind == "table":
        out.append("| " + " | ".join(b[1]) + " |")
        out.append("|" + "---|" * len(b[1]))
        out += ["| " + " | ".join(r) + " |" for r in b[2]]
        out.append("")
      elif kind == "image":
        out += [f"![{b[2]}]({b[1]})", f"*{b[2]}*", ""]
      elif kind == "code":
        out += ["```", b[1], "```", ""]
    return "\n".join(out)

  def html(self, directory: str) -> str:
    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'>",
           f"<title>{e(self.title)}</title><style>",
           "body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}",
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;",
           "padding:4px 8px;text-align:right}th{background:#eee}td:first-child{text-align:left}",
           "img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}",
           f"</style></head><body><h1>{e(self.title)}</h1>"]
    for b in self.blocks:
      kind = b[0]
      if kind == "heading":
        out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
      elif kind == "para":
        out.append(f"<p>{e(b[1])}</p>")
      elif kind == "bullets":
        out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b[1]) + "</ul>")
      elif kind == "table":
        out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in b[1]) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2]]
        out.append("</table>")
      elif kind == "image":
        with open(os.path.join(directory, b[1]), "rb") as f:
          data = base64.b64encode(f.read()).decode()
        out.append(f"<figure><img alt='{e(b[2])}' src='data:image/png;base64,{data}'>"
                   f"<figcaption>{e(b[2])}</figcaption></figure>")
      elif kind == "code":
        out.append(f"<pre>{e(b[1])}</pre>")
    out.append("</body></html>")
    return "\n".join(out)

  def write(self, directory: str) -> None:
    atomic_io.write_text(os.path.join(directory, "report.md"), self.markdown())
    atomic_io.write_text(os.path.join(directory, "report.html"), self.html(directory))
