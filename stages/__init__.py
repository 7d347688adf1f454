"""DVC stages: one module per stage in dvc.yaml; the reusable code lives in stages.lib.

Importing any of it turns off what would reach the network on its own (a stage runs offline: on a
cluster node, a GPU machine with no registry): albumentations' PyPI version check at import, DVC's
usage analytics and DVC Studio reports from DVCLive. A user's own setting of these wins.
"""
import os

for _name in ("NO_ALBUMENTATIONS_UPDATE", "DVC_NO_ANALYTICS", "DVC_STUDIO_OFFLINE"):
    os.environ.setdefault(_name, "1")
