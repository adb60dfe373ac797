"""The launcher's CPU setup for a benchmark, made before JAX starts: huge pages for
host memory, the XLA CPU device count, the convolution kernels and the stored
convolution inputs (launch.py --host_huge_pages, --cpu_devices, --cpu_conv_kernels,
--cpu_conv_input_copy)."""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sedl_jax import cpu_kernels, huge_pages  # noqa: E402  (no JAX import)
from sedl_jax.models import conv_input_copy  # noqa: E402  (no JAX import)

CPU_DEVICES = flags.DEFINE_string(
    "cpu_devices", "auto", "XLA CPU devices: auto (one per usable core, as launch.py) or N.")
CONV_KERNELS = flags.DEFINE_enum(
    "cpu_conv_kernels", "auto", list(cpu_kernels.SETTINGS),
    "CPU convolution kernels, as launch.py: auto (Eigen where measured faster) or xla_default.")

HUGE_PAGES = flags.DEFINE_enum(
    "host_huge_pages", "auto", list(huge_pages.SETTINGS),
    "As launch.py: auto runs the benchmark again at once with glibc.malloc.hugetlb=1 where "
    "that helps (sedl_jax/huge_pages.py); off = never.")

CONV_INPUT_COPY = flags.DEFINE_enum(
    "cpu_conv_input_copy", "auto", list(conv_input_copy.SETTINGS),
    "Store each ResNet convolution's training input on the CPU, as launch.py: auto or off.")


def apply(batch_sizes, quiet: bool = False) -> dict:
  """Runs the process again with huge pages where the launcher would (not
  returning then), sets the device count and kernels in XLA_FLAGS and the stored
  inputs for the models built later; returns what to record in the benchmark's JSON."""
  effect = huge_pages.reexec_if_useful(HUGE_PAGES.value)
  from sedl_jax import cpu_devices
  count, note = cpu_devices.choose(CPU_DEVICES.value, batch_sizes)
  if note and not quiet:
    print(note)
  cpu_devices.apply(count)
  cpu_kernels.apply(cpu_kernels.choose(CONV_KERNELS.value))
  conv_input_copy.set_setting(CONV_INPUT_COPY.value)
  return {"cpu_devices_flag": CPU_DEVICES.value, "cpu_conv_kernels": cpu_kernels.in_effect(),
          "cpu_conv_input_copy": CONV_INPUT_COPY.value, "host_huge_pages": effect}
