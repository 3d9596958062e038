"""Dataset format, replay buffers and Monte-Carlo returns."""

from robot_calql.data.dataset import Dataset, DatasetError, DatasetMeta, DatasetWriter, Episode

__all__ = ["Dataset", "DatasetError", "DatasetMeta", "DatasetWriter", "Episode"]
