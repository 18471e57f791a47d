"""The `repro` execution profile: training bit-identical whatever the threads, ISA or device.

`kernels` holds the backend-neutral fixed-order arithmetic, `functions` the autograd functions
built on it, `ops` the `NativeOps`-compatible operator set the models run against.
"""

from protocol.repro.ops import REPRO_OPS, ReproOps

__all__ = ["REPRO_OPS", "ReproOps"]
