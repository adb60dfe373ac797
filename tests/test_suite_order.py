"""`make test`'s scheduling: the longest test files go to the two workers first
(tests/conftest.py), and xdist is told to keep that order."""

import os
import re
import types

import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_make_test_keeps_the_longest_first_order():
  makefile = open(os.path.join(ROOT, "Makefile")).read()
  recipe = re.search(r"^test:.*\n\t(.*)$", makefile, re.M).group(1)
  # Without --no-loadscope-reorder, xdist sorts files by their number of tests and
  # the two-process file (2 tests, the longest) starts last.
  assert "--dist loadfile" in recipe and "--no-loadscope-reorder" in recipe, recipe
  # A renamed or removed file would silently drop out of the order.
  for name in conftest.LONGEST_FIRST:
    assert os.path.isfile(os.path.join(ROOT, "tests", name)), name


def test_collection_puts_the_longest_files_first():
  names = ["test_ntxent.py", conftest.LONGEST_FIRST[2], "test_config.py",
           conftest.LONGEST_FIRST[0], conftest.LONGEST_FIRST[1]]
  items = [types.SimpleNamespace(fspath=os.path.join(ROOT, "tests", n)) for n in names]
  conftest.pytest_collection_modifyitems(None, None, items)
  order = [os.path.basename(i.fspath) for i in items]
  assert order == [*conftest.LONGEST_FIRST[:3], "test_ntxent.py", "test_config.py"], order
