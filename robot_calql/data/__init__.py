"""Dataset format, replay buffers and Monte-Carlo returns."""

from robot_calql.data.dataset import Dataset, DatasetError, DatasetMeta, DatasetWriter, Episode

# Observation key of a frozen CNN's output for a frame's image: the replays store it in place of
# the image (their latent cache), and the agent's encoder reads it.
IMAGE_LATENT = "image_latent"

__all__ = ["IMAGE_LATENT", "Dataset", "DatasetError", "DatasetMeta", "DatasetWriter", "Episode"]
