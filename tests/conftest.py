import os
import sys

# Tests run on the CPU, single-threaded XLA per worker keeps 2 cores busy without thrash.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
