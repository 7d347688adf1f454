"""Reading films: file formats, dataset layouts and their records, splits, the preprocess cache written and
read, pixel transforms, predict's inputs, the demo's synthetic films."""
