"""Models and running them: the backbone registry, training, checkpoints, runtime, distributed training, inference, Grad-CAM, ONNX files, predict's runners."""
