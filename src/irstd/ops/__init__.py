"""Pure tensor helpers shared by data, labels, metrics and inference: connected components, padding, tiling."""
