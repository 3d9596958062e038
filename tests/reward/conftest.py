"""Synthetic image datasets and tiny random SigLIP / CLIP models for the reward tests.

The synthetic scene: a grey table, a dark-blue "bowl" square at a fixed place and a red "cube"
that moves in a straight line. Forward task: the cube ends inside the bowl (success) or
somewhere else (failure); backward task: it starts in the bowl and ends outside (success) or
stays in (failure). So the same final frame is a success for one instruction and not the other.
The cube stops 3 steps before the end (like a recording held after success), so the matching
labels are LABELS: 3 positive frames, the 4 before them left out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_calql.data.dataset import DatasetMeta, DatasetWriter, Episode
from robot_calql.reward import LabelConfig

FWD = "put the cube in the bowl"
BWD = "take the cube out of the bowl"
BOWL = (0.65, 0.65)  # bowl centre, as a fraction of the image
LABELS = LabelConfig(positive_last=3, ambiguous=4)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def render(size: int, cube: tuple[float, float]) -> np.ndarray:
    img = np.full((size, size, 3), 150, dtype=np.uint8)
    b = int(size * 0.15)
    by, bx = int(BOWL[0] * size), int(BOWL[1] * size)
    img[by - b:by + b, bx - b:bx + b] = (30, 30, 120)
    c = max(1, size // 10)
    cy, cx = int(cube[0] * size), int(cube[1] * size)
    img[max(cy - c, 0):cy + c, max(cx - c, 0):cx + c] = (220, 30, 30)
    return img


def synthetic_episode(rng: np.random.Generator, size: int, forward: bool, success: bool, T: int = 12) -> Episode:
    outside = (rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.9))
    inside = (BOWL[0] + rng.uniform(-0.08, 0.08), BOWL[1] + rng.uniform(-0.08, 0.08))
    if forward:
        start, end = outside, inside if success else (rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.9))
    else:
        start, end = inside, outside if success else (BOWL[0] + rng.uniform(-0.05, 0.05), BOWL[1])
    ts = np.minimum(np.arange(T + 1) / (T - 3), 1.0)
    images = np.stack([render(size, (start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])))
                       for t in ts])
    terminal = np.zeros(T, dtype=bool)
    terminal[-1] = success
    reward = terminal.astype(np.float32)
    return Episode(
        proprio=np.zeros((T + 1, 2), np.float32), action=np.zeros((T, 5), np.float32), reward=reward,
        terminal=terminal, image=images, instruction=FWD if forward else BWD,
        task="fwd" if forward else "bwd", success=success, source="demo" if success else "failure",
    )


def make_dataset(root, episodes_per_group: int = 6, size: int = 16, seed: int = 0, T: int = 12):
    """Forward and backward episodes, successes and failures, `episodes_per_group` of each."""
    rng = np.random.default_rng(seed)
    meta = DatasetMeta(control_hz=10, action_dim=5, proprio_dim=2, image_shape=(size, size, 3), robot="synthetic")
    w = DatasetWriter(root, meta)
    for _ in range(episodes_per_group):
        for forward in (True, False):
            for success in (True, False):
                w.write_episode(synthetic_episode(rng, size, forward, success, T))
    return root


@pytest.fixture
def synthetic_dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds") / "data")


WORDS = ["<pad>", "<unk>", "</s>", "put", "the", "cube", "in", "bowl", "take", "out", "of", "a"]


def tiny_tokenizer():
    """A word-level tokenizer built offline with the `tokenizers` library."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="</s>", model_max_length=16)


def tiny_hf_model(root, family: str, image_size: int = 32):
    """Save a tiny random SigLIP or CLIP model + tokenizer + image processor into `root`."""
    import transformers as tf

    ids = dict(vocab_size=len(WORDS), pad_token_id=0, bos_token_id=1, eos_token_id=2)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=16, **ids)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image_size, patch_size=8)
    torch.manual_seed(0)
    if family == "siglip":
        model = tf.SiglipModel(tf.SiglipConfig(text_config=text, vision_config=vision))
        proc = tf.SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    else:
        model = tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24))
        proc = tf.CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                        crop_size={"height": image_size, "width": image_size})
    model.save_pretrained(root)
    tiny_tokenizer().save_pretrained(root)
    proc.save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory):
    return tiny_hf_model(tmp_path_factory.mktemp("siglip"), "siglip")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return tiny_hf_model(tmp_path_factory.mktemp("clip"), "clip")
