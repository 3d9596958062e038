"""Small synthetic datasets for the dataset-format tests (also imported by a crash subprocess)."""

import numpy as np

from robot_calql.data.dataset import DatasetMeta, Episode


def meta(image=True, state=True):
    return DatasetMeta(control_hz=10.0, action_dim=5, proprio_dim=4, state_dim=6 if state else None,
                       image_shape=(8, 8, 3) if image else None, robot="test", camera="cam")


def episode(T=7, seed=0, image=True, state=True, success=True, source="demo"):
    r = np.random.default_rng(seed)
    term = np.zeros(T, bool)
    term[-1] = success
    return Episode(
        image=r.integers(0, 256, (T + 1, 8, 8, 3), dtype=np.uint8) if image else None,
        proprio=r.normal(size=(T + 1, 4)).astype(np.float32),
        state=r.normal(size=(T + 1, 6)).astype(np.float32) if state else None,
        action=r.uniform(-1, 1, (T, 5)).astype(np.float32),
        reward=term.astype(np.float32),
        terminal=term,
        instruction="put the cube in the bowl",
        task="cube_in_bowl",
        success=success,
        source=source,
        extra={"seed": seed},
    )
