"""DVC stages: one module per stage in dvc.yaml; the reusable code lives in stages.lib.

Importing this package pins the CPU kernels before torch starts (docs/design.md, "Reproducibility"):
oneDNN (convolutions), MKL (matrix products) and ATen's own loops pick their code by the CPU's
instruction set, and AVX-512 and AVX2 kernels add in other orders, so a CPU training run took other
paths on an AVX2 machine than on an AVX-512 one and ended elsewhere (the demo's ResNet-18: test
macro-F1 0.971 against 0.865). AVX2 is the widest set every x86-64 CPU of the last decade has. An
environment variable already set wins: ONEDNN_MAX_CPU_ISA=ALL MKL_CBWR=AUTO ATEN_CPU_CAPABILITY=default
(or avx512) gives the fastest kernels, with results that hold on that kind of CPU only. Thread counts
change results too; `make demo` and the tests pin them (OMP_NUM_THREADS=2).
"""
import os

CPU_PINS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
for _name, _value in CPU_PINS.items():
    os.environ.setdefault(_name, _value)
