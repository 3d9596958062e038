"""The success classifier: camera frame + task instruction -> P(success).

Two backbones share one head:

- `cnn` (default): a small convolutional encoder trained from scratch, the instruction as a
  learned embedding. Needs no pretrained weights, runs in about a millisecond per 64 px frame.
- a Hugging Face vision-language model (SigLIP, CLIP, or any model with `get_image_features`
  and `get_text_features`), loaded with `AutoModel.from_pretrained` from a local folder or a
  hub id. Its image and text embeddings feed the head; the backbone is frozen unless
  `unfreeze_blocks > 0` makes its last vision blocks trainable. The text tower always stays
  frozen, so each instruction's embedding is computed once and cached.

The head conditions image features on the instruction with FiLM (a per-instruction scale and
shift), so one model serves the forward and the backward task of a pair, whose success frames
look like each other's start frames.

Saved model folder (see `SuccessClassifier.save`):
    reward_model.json   config: backbone reference, image shape, instructions, threshold, labels,
                        gripper_open_min (the release gate; absent in older folders: none)
    model.safetensors   weights (for a Hugging Face backbone: the head and the unfrozen blocks;
                        the frozen backbone is loaded again from its reference)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

FORMAT = "robot_calql.reward/1"
CONFIG_FILE = "reward_model.json"
WEIGHTS_FILE = "model.safetensors"


class RewardModelError(ValueError):
    """A classifier folder, backbone or input the classifier cannot use."""


class ImageSizeError(RewardModelError):
    """Frames whose size differs from the frames the classifier was trained and calibrated on."""


class UnknownInstructionError(RewardModelError):
    """An instruction the classifier (with a learned instruction embedding) never saw."""


def gripper_open_min_value(value: Any, where: str = "gripper_open_min",
                           error: type[ValueError] = RewardModelError) -> float | None:
    """The release gate's setting checked: None (no gate) or a float in (0, 1]; else `error` naming `where`.

    Normalized gripper opening as in proprio: 0 closed .. 1 open. With a gate, a success also
    needs the gripper at least this open on the frame it is declared on (placing tasks succeed
    only once the object is let go).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise error(f"{where}: must be a normalized gripper opening in (0, 1] (0 closed .. 1 open) or null "
                    f"(no release gate), got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------------- backbones
class CNNBackbone(nn.Module):
    """Small conv encoder (stride-2 3x3 convs, 32 channels) + learned instruction embedding.

    norm="group" puts a GroupNorm after every convolution: without it training on small
    objects (a cube, a gripper) sits at chance level for a few hundred steps before it starts.
    pool=k averages each k x k block of pixels first, so a 128 px camera costs what a 64 px one
    does with k=2 (the policy's encoder can still use every pixel).
    """

    def __init__(self, image_shape: tuple[int, int, int], instructions: list[str],
                 channels: int = 32, layers: int = 4, feature_dim: int = 256, text_dim: int = 32,
                 norm: str = "group", pool: int = 1):
        super().__init__()
        self.instructions = list(instructions)
        self._index = {s: i for i, s in enumerate(self.instructions)}
        convs: list[nn.Module] = []
        c_in = 3
        if norm not in ("group", "none"):
            raise RewardModelError(f"cnn.norm must be group or none, got {norm!r}")
        self.pool = int(pool)
        if self.pool < 1 or image_shape[0] % self.pool or image_shape[1] % self.pool:
            raise RewardModelError(f"cnn.pool must be a whole number >= 1 that divides the frame size "
                                   f"{image_shape[0]}x{image_shape[1]}, got {pool}")
        for _ in range(layers):
            convs.append(nn.Conv2d(c_in, channels, 3, stride=2, padding=1))
            if norm == "group":
                convs.append(nn.GroupNorm(min(8, channels), channels))
            convs.append(nn.ReLU())
            c_in = channels
        self.convs = nn.Sequential(*convs)
        with torch.no_grad():
            n = self.convs(torch.zeros(1, 3, image_shape[0] // self.pool, image_shape[1] // self.pool)).numel()
        self.proj = nn.Sequential(nn.Linear(n, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.embedding = nn.Embedding(max(1, len(self.instructions)), text_dim)
        self.image_dim, self.text_dim = feature_dim, text_dim

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> float [B, feature_dim]."""
        x = images.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        return self.proj(self.convs(x).flatten(1))

    def encode_text(self, instructions: list[str]) -> torch.Tensor:
        unknown = sorted({s for s in instructions if s not in self._index})
        if unknown:
            raise UnknownInstructionError(
                f"instruction(s) {unknown} were not in the training data; this classifier knows {self.instructions}"
            )
        idx = torch.tensor([self._index[s] for s in instructions], device=self.embedding.weight.device)
        return self.embedding(idx)


def _features(out: Any) -> torch.Tensor:
    """transformers >= 5 returns a ModelOutput from get_*_features; older versions a tensor."""
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output


class HFBackbone(nn.Module):
    """A Hugging Face vision-language model (SigLIP, CLIP, ...) as a feature extractor.

    `ref` is a local folder (or a hub id when a hub is reachable and local_files_only=False).
    Frames are resized and normalised here in torch (size, mean and std from the model's image
    processor config), so no PIL or torchvision is needed and the whole path can be trained.
    """

    def __init__(self, ref: str, local_files_only: bool = True, unfreeze_blocks: int = 0):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.ref = ref
        try:
            self.model = AutoModel.from_pretrained(ref, local_files_only=local_files_only)
            self.tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=local_files_only)
        except (OSError, ValueError) as e:
            where = "local folder" if Path(ref).exists() else "local folder or hub id"
            raise RewardModelError(
                f"cannot load the Hugging Face backbone '{ref}' ({where}, local_files_only={local_files_only}): "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        for name in ("get_image_features", "get_text_features"):
            if not hasattr(self.model, name):
                raise RewardModelError(f"backbone '{ref}' ({type(self.model).__name__}) has no {name}; "
                                       "use a vision-language model such as SigLIP or CLIP")
        self.model.eval()
        self.image_size, mean, std = self._image_settings(ref, local_files_only)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        text_cfg = getattr(self.model.config, "text_config", None)
        self.max_length = int(getattr(text_cfg, "max_position_embeddings", 64) or 64)
        self._text_cache: dict[str, torch.Tensor] = {}
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.unfreeze_blocks = int(unfreeze_blocks)
        if self.unfreeze_blocks > 0:
            self._unfreeze(self.unfreeze_blocks)
        with torch.no_grad():
            self.image_dim = int(self.encode_images(torch.zeros(1, 8, 8, 3, dtype=torch.uint8)).shape[-1])
            self.text_dim = int(self.encode_text(["a"]).shape[-1])
        self._text_cache.clear()

    def _image_settings(self, ref: str, local_files_only: bool) -> tuple[tuple[int, int], list[float], list[float]]:
        vcfg = getattr(self.model.config, "vision_config", None)
        size = int(getattr(vcfg, "image_size", 224))
        hw, mean, std = (size, size), [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
        try:
            from transformers import AutoImageProcessor

            proc = AutoImageProcessor.from_pretrained(ref, local_files_only=local_files_only)
            s = proc.size
            h = getattr(s, "height", None) or (s.get("height") if isinstance(s, dict) else None)
            w = getattr(s, "width", None) or (s.get("width") if isinstance(s, dict) else None)
            short = getattr(s, "shortest_edge", None) or (s.get("shortest_edge") if isinstance(s, dict) else None)
            if h and w:
                hw = (int(h), int(w))
            elif short:
                hw = (int(short), int(short))  # CLIP: resize the short side, centre-crop a square
            mean, std = list(proc.image_mean), list(proc.image_std)
        except (OSError, ValueError, TypeError, AttributeError) as e:
            log.warning("no image processor config for '%s' (%s); using %s px, mean/std 0.5", ref, e, hw)
        return hw, mean, std

    def _unfreeze(self, n: int) -> None:
        vision = getattr(self.model, "vision_model", None)
        layers = getattr(getattr(vision, "encoder", None), "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise RewardModelError(f"unfreeze_blocks={n}: cannot find vision_model.encoder.layers in "
                                   f"{type(self.model).__name__}")
        if n > len(layers):
            raise RewardModelError(f"unfreeze_blocks={n}, but the vision tower has only {len(layers)} blocks")
        for layer in list(layers)[-n:]:
            layer.requires_grad_(True)
        # what follows the last block: final norm, pooling head, projection
        for name in ("post_layernorm", "head"):
            if getattr(vision, name, None) is not None:
                getattr(vision, name).requires_grad_(True)
        if getattr(self.model, "visual_projection", None) is not None:
            self.model.visual_projection.requires_grad_(True)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        return F.normalize(_features(self.model.get_image_features(pixel_values=x)), dim=-1)

    def encode_text(self, instructions: list[str]) -> torch.Tensor:
        missing = sorted({s for s in instructions if s not in self._text_cache})
        if missing:
            enc = self.tokenizer(missing, padding="max_length", truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            kwargs = {"input_ids": enc["input_ids"].to(self.mean.device)}
            if "attention_mask" in enc and "siglip" not in type(self.model).__name__.lower():
                kwargs["attention_mask"] = enc["attention_mask"].to(self.mean.device)
            with torch.no_grad():
                feats = F.normalize(_features(self.model.get_text_features(**kwargs)), dim=-1)
            for s, f in zip(missing, feats, strict=True):
                self._text_cache[s] = f
        return torch.stack([self._text_cache[s] for s in instructions])

    def train(self, mode: bool = True) -> HFBackbone:
        """A frozen backbone stays in eval mode (no dropout) while the head trains."""
        super().train(mode)
        if not any(p.requires_grad for p in self.model.parameters()):
            self.model.eval()
        return self

    def trainable_state_keys(self) -> list[str]:
        return [f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad]


# ---------------------------------------------------------------------------------------- head
class FiLMHead(nn.Module):
    """Image features scaled and shifted per instruction, then an MLP to one logit."""

    def __init__(self, image_dim: int, text_dim: int, hidden: int = 256):
        super().__init__()
        self.image = nn.Linear(image_dim, hidden)
        self.film = nn.Linear(text_dim, 2 * hidden)
        self.mlp = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(text_feats).chunk(2, dim=-1)
        return self.mlp(self.image(image_feats) * (1 + gamma) + beta).squeeze(-1)


# ---------------------------------------------------------------------------------- classifier
class SuccessClassifier(nn.Module):
    """P(success | camera frame, instruction). Build with `build_classifier`, load with `load_classifier`.

    `predict_proba(images, instructions)` is the API other modules use; `threshold` is the
    calibrated decision threshold (success when p >= threshold). `gripper_open_min` is the
    release gate every consumer applies to a (debounced) success: None, or the normalized gripper
    opening the frame's gripper must reach (`released`).
    """

    def __init__(self, config: dict[str, Any], local_files_only: bool | None = None):
        super().__init__()
        self.config = dict(config)
        self.image_shape = tuple(int(x) for x in config["image_shape"])
        self.instructions = list(config["instructions"])
        self.threshold = float(config.get("threshold", 0.5))
        self.gripper_open_min = gripper_open_min_value(config.get("gripper_open_min"))
        backbone = str(config["backbone"])
        if backbone == "cnn":
            self.backbone: nn.Module = CNNBackbone(self.image_shape, self.instructions, **config.get("cnn", {}))
        else:
            lfo = config.get("local_files_only", True) if local_files_only is None else local_files_only
            self.backbone = HFBackbone(backbone, local_files_only=lfo,
                                       unfreeze_blocks=int(config.get("unfreeze_blocks", 0)))
        self.head = FiLMHead(self.backbone.image_dim, self.backbone.text_dim, int(config.get("head_hidden", 256)))

    @property
    def is_hf(self) -> bool:
        return isinstance(self.backbone, HFBackbone)

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    def released(self, gripper_opening: float | None) -> bool:
        """The release gate: True without one; with one, whether `gripper_opening` (normalized,
        0 closed .. 1 open; None: unknown) is at least `gripper_open_min`. Unknown is not released."""
        if self.gripper_open_min is None:
            return True
        return gripper_opening is not None and float(gripper_opening) >= self.gripper_open_min

    def check_images(self, images: np.ndarray | torch.Tensor) -> None:
        """Raise ImageSizeError unless images are uint8 [B, H, W, 3] of the trained size."""
        shape = tuple(images.shape[-3:])
        if images.ndim != 4 or shape != self.image_shape:
            raise ImageSizeError(
                f"frames of shape {tuple(images.shape)}, but this classifier was trained and calibrated on "
                f"{self.image_shape} frames (uint8 [B, H, W, 3]); crop and resize the camera image like the "
                "training data"
            )
        dtype = images.dtype
        if dtype not in (np.uint8, torch.uint8):
            raise RewardModelError(f"frames must be uint8, got {dtype}")

    def forward(self, images: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """Logits [B] for uint8 frames [B, H, W, 3] on the model's device."""
        return self.head(self.backbone.encode_images(images), self.backbone.encode_text(instructions))

    @torch.no_grad()
    def predict_proba(self, images: np.ndarray, instructions: list[str] | str, batch_size: int = 64) -> np.ndarray:
        """P(success) float32 [B] for uint8 frames [B, H, W, 3] (or one frame [H, W, 3]).

        `instructions` is one string for all frames or a list with one per frame.
        """
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        self.check_images(images)
        if isinstance(instructions, str):
            instructions = [instructions] * len(images)
        if len(instructions) != len(images):
            raise RewardModelError(f"{len(images)} frames but {len(instructions)} instructions")
        was_training = self.training
        self.eval()
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.array(images[i:i + batch_size])).to(self.device)
            out.append(torch.sigmoid(self(x, list(instructions[i:i + batch_size]))).float().cpu().numpy())
        self.train(was_training)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def predict(self, images: np.ndarray, instructions: list[str] | str) -> np.ndarray:
        """bool [B]: P(success) >= the calibrated threshold."""
        return self.predict_proba(images, instructions) >= self.threshold

    # ------------------------------------------------------------------------------- save/load
    def _weights(self) -> dict[str, torch.Tensor]:
        sd = self.state_dict()
        if self.is_hf:
            keep = {f"backbone.{k}" for k in self.backbone.trainable_state_keys()}
            sd = {k: v for k, v in sd.items() if not k.startswith("backbone.") or k in keep}
        return {k: v.detach().cpu().contiguous() for k, v in sd.items()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write reward_model.json + model.safetensors into `path` (created); returns the folder.

        The files are written under temporary names and renamed, so a reader never sees a
        half-written model.
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = dict(self.config, format=FORMAT, threshold=float(self.threshold),
                   gripper_open_min=self.gripper_open_min,  # checked when built
                   image_shape=list(self.image_shape), instructions=self.instructions)
        tmp_w = path / f".{WEIGHTS_FILE}.tmp"
        tmp_c = path / f".{CONFIG_FILE}.tmp"
        save_file(self._weights(), str(tmp_w), metadata={"format": FORMAT})
        tmp_c.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        os.replace(tmp_w, path / WEIGHTS_FILE)
        os.replace(tmp_c, path / CONFIG_FILE)
        return path


def build_classifier(backbone: str, image_shape: tuple[int, int, int], instructions: list[str],
                     local_files_only: bool = True, unfreeze_blocks: int = 0, head_hidden: int = 256,
                     cnn: dict | None = None, gripper_open_min: float | None = None) -> SuccessClassifier:
    """A fresh, untrained classifier. backbone: 'cnn' or a Hugging Face folder / hub id;
    gripper_open_min: the release gate (None: off)."""
    if backbone != "cnn" and Path(os.path.expanduser(backbone)).exists():
        backbone = str(Path(os.path.expanduser(backbone)).resolve())
    config = {
        "backbone": backbone,
        "image_shape": list(image_shape),
        "instructions": sorted(instructions),
        "local_files_only": bool(local_files_only),
        "unfreeze_blocks": int(unfreeze_blocks),
        "head_hidden": int(head_hidden),
        "threshold": 0.5,
        "gripper_open_min": gripper_open_min,
    }
    if backbone == "cnn":
        config["cnn"] = dict(cnn or {})
    return SuccessClassifier(config)


def load_classifier(path: str | os.PathLike, device: str = "cpu",
                    local_files_only: bool | None = None) -> SuccessClassifier:
    """Load a classifier folder written by `reward-train` (or `SuccessClassifier.save`).

    A Hugging Face backbone is loaded again from the reference stored in the config (its
    folder must still exist); `local_files_only` overrides the stored setting.
    """
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path, w_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not path.is_dir():
        raise RewardModelError(f"{path}: no such classifier folder")
    if not cfg_path.is_file() or not w_path.is_file():
        missing = [p.name for p in (cfg_path, w_path) if not p.is_file()]
        raise RewardModelError(f"{path}: not a reward classifier folder (missing {', '.join(missing)}); "
                               "train one with `robot-calql reward-train`")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RewardModelError(f"{cfg_path}: corrupt JSON ({e})") from None
    if cfg.get("format") != FORMAT:
        raise RewardModelError(f"{cfg_path}: format {cfg.get('format')!r}, this robot_calql reads {FORMAT!r}")
    gripper_open_min_value(cfg.get("gripper_open_min"), f"{cfg_path}: gripper_open_min")
    backbone = str(cfg["backbone"])
    if backbone != "cnn" and backbone.startswith("/") and not Path(backbone).exists():
        raise RewardModelError(f"{cfg_path}: the Hugging Face backbone folder {backbone} no longer exists")
    clf = SuccessClassifier(cfg, local_files_only=local_files_only)
    weights = load_file(str(w_path))
    result = clf.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not (clf.is_hf and k.startswith("backbone."))]
    if result.unexpected_keys or missing:
        raise RewardModelError(f"{w_path}: weights do not match the config "
                               f"(missing {missing[:5]}, unexpected {result.unexpected_keys[:5]})")
    return clf.to(device).eval()
