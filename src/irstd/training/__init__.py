"""The Lightning side of training: the module, checkpoints, DDP, loggers and the run directory."""
