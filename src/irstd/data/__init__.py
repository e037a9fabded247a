"""Data layer: dataset sources, point labels, the label bank, transforms, the DataModule."""
