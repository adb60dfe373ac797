"""Renders a written HTML page in headless Chromium (Debian's `chromium`, which
.ci/run installs) with the network cut off, and reports what a reader would
see: the title, headings, table rows, every image's decoded size, anything
fetched from outside the page, and every error the page raised.

The page is copied with a probe script at the top of <head>: it records
script errors, failed resource loads and console.error calls, and on `load`
writes its findings as JSON into the DOM, which `--dump-dom` returns.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__errors.push(t && t !== window ? 'failed to load ' + (t.src || t.href || t.tagName)
                                         : String(e.message));
}, true);
var __ce = console.error;
console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, ' '));
  return __ce.apply(console, arguments);
};
window.addEventListener('load', function () {
  var out = {
    title: document.title,
    headings: Array.from(document.querySelectorAll('h1,h2,h3')).map(function (h) {
      return h.textContent; }),
    table_rows: Array.from(document.querySelectorAll('table')).map(function (t) {
      return t.rows.length; }),
    images: Array.from(document.images).map(function (i) {
      return {width: i.naturalWidth, height: i.naturalHeight, complete: i.complete,
              inline: i.src.indexOf('data:') === 0}; }),
    fetched: performance.getEntriesByType('resource').map(function (r) { return r.name; })
      .filter(function (n) { return n.indexOf('data:') !== 0; }),
    errors: window.__errors
  };
  var pre = document.createElement('pre');
  pre.id = '__sedl_probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
  """The browser's path; the test is skipped, saying how to get one, without it."""
  for name in CANDIDATES:
    path = shutil.which(name)
    if path:
      return path
  pytest.skip("no Chromium on this machine: the browser check of the HTML outputs needs "
              "Debian's `chromium` package (apt-get install chromium; .ci/run installs it)")


def render(page: str, timeout: float = 120.0) -> dict:
  """What headless Chromium shows of `page` (see the module docstring)."""
  browser = chromium()
  text = open(page, encoding="utf-8").read()
  probed = re.sub(r"<head>", "<head>" + PROBE, text, count=1)
  assert probed != text, f"{page}: no <head>"
  with tempfile.TemporaryDirectory() as tmp:
    copy = os.path.join(tmp, "page.html")
    with open(copy, "w", encoding="utf-8") as f:
      f.write(probed)
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-extensions", f"--user-data-dir={os.path.join(tmp, 'u')}",
           # No network at all: any asset the page tried to fetch would fail, and be reported.
           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000",
           "--dump-dom", "file://" + copy]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  found = re.search(r'<pre id="__sedl_probe">(.*?)</pre>', out.stdout, re.S)
  assert found, f"Chromium rendered no probe for {page} (exit {out.returncode}): {out.stderr[-2000:]}"
  import html
  return json.loads(html.unescape(found.group(1)))


def check_page(page: str, title: str, min_images: int = 1) -> dict:
  """Renders `page` and asserts what every HTML output must satisfy: its title,
  no errors, nothing fetched from outside, every image inline and decoded."""
  seen = render(page)
  assert seen["title"] == title and title in seen["headings"]
  assert seen["errors"] == [], seen["errors"]
  assert seen["fetched"] == [], seen["fetched"]
  assert len(seen["images"]) >= min_images
  for img in seen["images"]:
    assert img["inline"] and img["complete"] and img["width"] > 0 and img["height"] > 0, img
  return seen
