"""Which implementation of the repro contract runs for a tensor: the compiled fixed-order CPU
kernels (`protocol/repro/csrc`) for CPU tensors, the device-neutral torch reference otherwise.

Both give the same bits (tests/repro/test_kernels_reference.py), so the choice is speed only. The
CPU kernels' ISA follows torch's own capability (`ATEN_CPU_CAPABILITY`), so one setting pins both
and the test matrix exercises every kernel path.
"""

from types import ModuleType

import torch

from protocol.errors import ProfileMismatch
from protocol.repro import reference

ISA_FOR_TORCH_CAPABILITY = {"DEFAULT": "scalar", "AVX2": "avx2", "AVX512": "avx512"}
_cpu: ModuleType | None = None


def get_torch_isa() -> str:
    """The kernel ISA matching torch's own CPU capability (`ATEN_CPU_CAPABILITY`)."""
    return ISA_FOR_TORCH_CAPABILITY.get(torch.backends.cpu.get_cpu_capability(), "scalar")


def get_cpu_kernels() -> ModuleType:
    """The compiled kernels, set to torch's CPU capability; ProfileMismatch if not built."""
    global _cpu
    if _cpu is None:
        try:
            from protocol.repro import _fixed_order
        except ImportError as err:
            raise ProfileMismatch(
                "the repro profile needs the compiled fixed-order kernels (protocol.repro._fixed_order), "
                f"which did not load ({err}); reinstall with scripts/install.sh"
            ) from err
        _fixed_order.select_isa(get_torch_isa())
        _cpu = _fixed_order
    return _cpu


def get_backend(device: torch.device):
    return get_cpu_kernels() if device.type == "cpu" else reference
