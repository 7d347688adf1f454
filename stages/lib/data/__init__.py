"""Reading films: file formats, dataset layouts, the preprocess cache and the cached dataset, pixel transforms, predict's inputs, external datasets, the demo's synthetic films."""
