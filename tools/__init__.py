"""Tools that operate on the project: dvc.yaml's code deps and demo/dvc.yaml written, the project copied with
other params, the demo's films made, the GPU check. They may use any room of stages.lib; nothing under stages/
imports them."""
