"""DVC stages: one module per stage in dvc.yaml; the reusable code lives in stages.lib.

Importing any of it turns off what would reach the network on its own (a stage runs offline: on a
cluster node, a GPU machine with no registry): albumentations' PyPI version check at import, DVC's
usage analytics and DVC Studio reports from DVCLive. A user's own setting of these wins.

It also pins the CPU kernels before torch runs one (docs/design.md, "Reproducibility"):
oneDNN (convolutions), MKL (matrix products) and ATen's own loops pick their code by the CPU's
instruction set, and AVX-512 and AVX2 kernels add in other orders, so the same training run ends
elsewhere on another CPU. AVX2 is the widest set every x86-64 CPU of the last decade has; MKL_CBWR
also holds MKL to one code path on Intel and AMD alike. This does not pin everything: oneDNN also
sizes its blocks by the CPU's caches, which no setting fixes (README says how far results move).
An environment variable already set wins: ONEDNN_MAX_CPU_ISA=ALL MKL_CBWR=AUTO
ATEN_CPU_CAPABILITY=avx512 gives the fastest kernels of an AVX-512 machine. The thread count changes
results too: it is a param, train.threads (demo/params.yaml: 2), which train and evaluate set before they
compute (stages/lib/model/runtime.py, use_threads); the tests run with 2 (tests/conftest.py).
"""

import os

for _name in ("NO_ALBUMENTATIONS_UPDATE", "DVC_NO_ANALYTICS", "DVC_STUDIO_OFFLINE"):
    os.environ.setdefault(_name, "1")

CPU_PINS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
for _name, _value in CPU_PINS.items():
    os.environ.setdefault(_name, _value)
