"""irstd: infrared small target detection from single point labels (LESPS)."""

__version__ = "0.1.0"
