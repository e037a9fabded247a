"""Label update rules run during training: each maps a batch's predictions and current labels to new labels.

`pal` holds PAL's progressive rule (easy-set test, admission of hard images, label update with background
decay); LESPS's rule is `irstd.lesps.evolve_labels`. Pure tensor functions; `reference` holds their plain
per-target versions for tests and benchmarks.
"""
