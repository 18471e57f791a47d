"""The `repro` execution profile: training bit-identical whatever the threads, ISA or device.

`reference` states the fixed-order arithmetic (contract `fo1`) in pure torch; `backend` picks the
compiled kernels (`_fixed_order`, built from `csrc/`) for CPU tensors or the reference elsewhere;
`functions` holds the autograd functions built on a backend, and `ops` the `NativeOps`-compatible
operator set (`REPRO_OPS`) the models run against. Nothing is imported here, so importing one
part never drags in the others.
"""
