"""Library code behind the stages: data, transforms, models, training, metrics, plotting."""
