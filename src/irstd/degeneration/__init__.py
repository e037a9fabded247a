"""The paper's mapping-degeneration study (Sec. 3, Sec. 5.2.1): a CNN trained on point labels first segments a
cluster of target pixels, then shrinks to the point. `training` runs many single-image trainings in one process,
`samples` builds real and synthetic inputs, `study` runs it all and `report` writes the tables and figures."""
