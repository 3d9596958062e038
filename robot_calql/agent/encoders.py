"""Observation encoders: observation dict -> feature vector for the actor and the critics.

Two modes, chosen by the observation spec:

- state: `{"state": (S,)}` -> [state, instruction embedding]
- pixels: `{"image": (H, W, 3), "proprio": (P,)}` -> [CNN(image), proprio, instruction embedding]

Several cameras: a spec with extra camera keys `image_<name>` (robot_calql.control.cameras, same
(H, W, 3) as `image`) runs every camera's image through the same CNN (shared weights, one batched
pass) and concatenates the latents in spec order, main camera first:
[CNN(image), CNN(image_wrist), ..., proprio, instruction]. The position in the concatenation
tells the networks which camera a latent came from. A one-camera spec has exactly the
parameters and state dict it always had.

Vector inputs (state, proprio) are standardised inside the encoder with per-dimension mean and
std buffers (`<key>_mean`, `<key>_std`, part of the state dict, so the policy node and every
checkpoint carry them). Pre-training sets them from the offline data with `set_normalization`;
until then they are 0 and 1. Without standardisation, features that matter in a robot cell (the
cube a few centimetres from the gripper) are tiny next to others, and the networks need orders
of magnitude more updates to pick them up. Standardised values are clipped to +-obs_clip (10): a
dimension that hardly varied in the data (the cube's tilt in upright demos, std 0.002) otherwise
reaches 400 sigma when the cube tips over online, and the critic's TD error exploded (mean
squared error 9000 in the first 500 online steps).

Optionally `"text_embedding": (D,)` in the spec adds a pretrained instruction embedding (e.g.
CLIP text features) given with every observation. The learned instruction embedding (one
vector per instruction id) is used when there is more than one instruction.

The CNNs are plain torch (torchvision is never needed): the RoboFuME-style encoder (4 conv
layers of 32 channels, each followed by LayerNorm and ReLU, then a linear projection with
LayerNorm and tanh) and a small ResNet. End to end (the default), the critic loss trains them and
the actor sees their output detached (see calql.py).

Frozen CNN (`frozen_cnn=True`, the agent's `encoder_frozen`): the CNN is pre-trained on the demos
(encoder_pretrain.py), then never changes. An observation may then carry the CNN's output for
its image, computed once per frame, under `IMAGE_LATENT` (`"image_latent": (L,)` float) instead
of the image: the replay buffers store those latents (`FrameEncoder`), so an update never runs
the CNN. A live frame (`"image"`) still goes through the CNN, as in the end-to-end mode. With
several cameras the cached latent is every camera's latent, concatenated in `image_keys` order
(`cached_latent_dim` = the CNN's output size times the number of cameras).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from robot_calql.data import IMAGE_LATENT  # the replays' key for a frame's cached CNN output
from robot_calql.data.dataset import is_image_key


class ObsSpecError(ValueError):
    """An observation spec or observation that does not fit the encoder (names the key)."""


def _conv_ln_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    # GroupNorm with one group = LayerNorm over (C, H, W) with a per-channel affine transform.
    return [nn.Conv2d(cin, cout, 3, stride=stride), nn.GroupNorm(1, cout), nn.ReLU(inplace=True)]


class RoboFuMEEncoder(nn.Module):
    """4 conv layers (3x3, 32 channels) with LayerNorm + ReLU, then Linear -> LayerNorm -> tanh."""

    def __init__(self, image_shape: tuple[int, int, int], channels: int = 32,
                 strides: tuple[int, ...] = (2, 2, 1, 1), latent_dim: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        cin = image_shape[2]
        for s in strides:
            layers += _conv_ln_relu(cin, channels, s)
            cin = channels
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            n = self.convs(torch.zeros(1, image_shape[2], image_shape[0], image_shape[1])).numel()
        self.proj = nn.Sequential(nn.Linear(n, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh())
        self.out_dim = latent_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x).flatten(1))


class SpatialSoftmaxEncoder(nn.Module):
    """The RoboFuME conv stack, a 1x1 conv to `latent_dim // 2` keypoint maps, and a spatial
    softmax (learned temperature): each map's expected (x, y) in [-1, 1] of the feature grid.
    The latent is those coordinates, so where things are in the image is its explicit content."""

    def __init__(self, image_shape: tuple[int, int, int], channels: int = 32,
                 strides: tuple[int, ...] = (2, 1, 1, 1), latent_dim: int = 64):
        super().__init__()
        if latent_dim % 2:
            raise ObsSpecError(f"encoder spatial: encoder_latent_dim must be even (x, y per keypoint), got {latent_dim}")
        layers: list[nn.Module] = []
        cin = image_shape[2]
        for s in strides:
            layers += _conv_ln_relu(cin, channels, s)
            cin = channels
        layers.append(nn.Conv2d(channels, latent_dim // 2, 1))
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            _, _, h, w = self.convs(torch.zeros(1, image_shape[2], image_shape[0], image_shape[1])).shape
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, h), torch.linspace(-1.0, 1.0, w), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], dim=1), persistent=False)  # (HW, 2)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.out_dim = latent_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.convs(x).flatten(2).float()  # (B, K, HW)
        attn = torch.softmax(maps / self.log_temperature.exp(), dim=-1)
        return (attn @ self.grid).flatten(1)  # (B, 2K): x, y of each keypoint


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.n1 = nn.GroupNorm(1, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.n2 = nn.GroupNorm(1, cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.GroupNorm(1, cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.n2(self.c2(self.n1(self.c1(x)).relu_())) + self.skip(x)).relu_()


class SmallResNet(nn.Module):
    """A small ResNet: stride-2 stem, one basic block per stage, global average pooling."""

    def __init__(self, image_shape: tuple[int, int, int], stages: tuple[int, ...] = (32, 64, 128),
                 latent_dim: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(image_shape[2], stages[0], 3, stride=2, padding=1, bias=False),
                                  nn.GroupNorm(1, stages[0]), nn.ReLU(inplace=True))
        blocks, cin = [], stages[0]
        for c in stages:
            blocks.append(_BasicBlock(cin, c, 2))
            cin = c
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Sequential(nn.Linear(cin, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh())
        self.out_dim = latent_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's random shift of camera frames (B, H, W, C), any dtype: each frame moved by up to `pad`
    pixels in each direction, the edge pixels repeated into the gap (the same as replicate-padding
    by `pad` and cropping back at a random offset).

    One `index_select` of whole pixels on the frames as they are stored (uint8, channels last):
    each output pixel's source comes from clamped row and column offsets, so there is no padded
    copy, no float copy and no per-channel index.
    """
    if pad <= 0:
        return frames
    B, H, W = frames.shape[:3]
    dev = frames.device
    off = torch.randint(0, 2 * pad + 1, (B, 2), device=dev, generator=generator) - pad
    rows = (torch.arange(H, device=dev) + off[:, 0:1]).clamp_(0, H - 1)  # (B, H): source row of each output row
    cols = (torch.arange(W, device=dev) + off[:, 1:2]).clamp_(0, W - 1)  # (B, W)
    rows += torch.arange(B, device=dev)[:, None] * H  # rows of the (B * H) stacked frames
    src = (rows[:, :, None] * W + cols[:, None, :]).view(-1)  # (B * H * W,) source pixel of each output pixel
    return frames.reshape(B * H * W, -1).index_select(0, src).view(frames.shape)


class ObsEncoder(nn.Module):
    """Observation dict -> features (B, out_dim). See the module docstring for the two modes."""

    def __init__(self, obs_spec: Mapping[str, tuple[int, ...]], num_instructions: int = 1,
                 instruction_dim: int = 16, encoder: str = "robofume", latent_dim: int = 64,
                 conv_strides: tuple[int, ...] = (2, 2, 1, 1), aug_pad: int = 4, obs_clip: float = 10.0,
                 frozen_cnn: bool = False):
        super().__init__()
        spec = {k: tuple(int(x) for x in v) for k, v in obs_spec.items()}
        self.pixels = "image" in spec
        self.obs_clip = float(obs_clip)
        self.frozen_cnn = bool(frozen_cnn) and self.pixels
        self.spec = spec
        self.aug_pad = aug_pad
        if self.pixels:
            if "proprio" not in spec:
                raise ObsSpecError(f"pixel observation spec needs 'proprio' beside 'image', got keys {sorted(spec)}")
            shape = spec["image"]
            if len(shape) != 3 or shape[2] != 3:
                raise ObsSpecError(f"obs spec 'image' must be (H, W, 3), got {shape}")
            # the cameras, main first: each through the shared CNN, latents concatenated
            self.image_keys = ["image", *(k for k in spec if is_image_key(k) and k != "image")]
            for k in self.image_keys[1:]:
                if spec[k] != shape:
                    raise ObsSpecError(f"obs spec '{k}' is {spec[k]}: every camera's image must be {shape} like 'image'")
            if encoder == "robofume":
                self.cnn: nn.Module | None = RoboFuMEEncoder(shape, strides=tuple(conv_strides), latent_dim=latent_dim)
            elif encoder == "spatial":
                self.cnn = SpatialSoftmaxEncoder(shape, strides=tuple(conv_strides), latent_dim=latent_dim)
            elif encoder == "resnet":
                self.cnn = SmallResNet(shape, latent_dim=latent_dim)
            else:
                raise ObsSpecError(f"unknown image encoder '{encoder}' (robofume, spatial or resnet)")
            # NHWC weights: the images arrive as (B, H, W, 3), and oneDNN convolutions run faster
            # on CPU in channels-last layout (same values, same state dict).
            self.cnn.to(memory_format=torch.channels_last)
            if frozen_cnn:
                self.cnn.requires_grad_(False)
            self.vector_keys = ["proprio"]
            dim = self.cnn.out_dim * len(self.image_keys)
        else:
            if "state" not in spec:
                raise ObsSpecError(f"observation spec needs 'state' or 'image'+'proprio', got keys {sorted(spec)}")
            extra = [k for k in spec if is_image_key(k)]
            if extra:
                raise ObsSpecError(f"obs spec has camera images {extra} but no main 'image'")
            self.image_keys = []
            self.cnn = None
            self.vector_keys = ["state"]
            dim = 0
        if "text_embedding" in spec:
            self.vector_keys.append("text_embedding")
        for k in self.vector_keys:
            if len(spec[k]) != 1:
                raise ObsSpecError(f"obs spec '{k}' must be a vector (D,), got {spec[k]}")
            dim += spec[k][0]
        self.normalized_keys = [k for k in self.vector_keys if k != "text_embedding"]
        for k in self.normalized_keys:
            self.register_buffer(f"{k}_mean", torch.zeros(spec[k][0]))
            self.register_buffer(f"{k}_std", torch.ones(spec[k][0]))
        self.num_instructions = int(num_instructions)
        if self.num_instructions < 1:
            raise ObsSpecError(f"num_instructions must be >= 1, got {num_instructions}")
        self.instruction = nn.Embedding(self.num_instructions, instruction_dim) if self.num_instructions > 1 else None
        if self.instruction is not None:
            dim += instruction_dim
        self.out_dim = dim

    def set_normalization(self, stats: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Set the standardisation of vector inputs: stats[key] = (mean, std), each (D,).

        A std below 1e-3 (a dimension that never varied in the data) is taken as 1, so a value
        that varies later online is not blown up."""
        for k in self.normalized_keys:
            if k not in stats:
                raise ObsSpecError(f"normalisation statistics lack '{k}' (have {sorted(stats)})")
            mean, std = (torch.as_tensor(x, dtype=torch.float32).reshape(-1) for x in stats[k])
            want = getattr(self, f"{k}_mean").shape
            if mean.shape != want or std.shape != want:
                raise ObsSpecError(f"normalisation of '{k}': got {tuple(mean.shape)}/{tuple(std.shape)}, expected {tuple(want)}")
            if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
                raise ObsSpecError(f"normalisation of '{k}' has NaN or infinite values")
            std = torch.where(std < 1e-3, torch.ones_like(std), std)
            getattr(self, f"{k}_mean").copy_(mean)
            getattr(self, f"{k}_std").copy_(std)

    def image_to_float(self, images: torch.Tensor, augment: bool) -> torch.Tensor:
        if augment:  # shifted while still uint8 and channels last: a quarter of the bytes of a float copy
            images = random_shift(images, self.aug_pad)
        return images.permute(0, 3, 1, 2).float().mul_(1.0 / 255.0)

    @property
    def latent_dim(self) -> int:
        """Size of the CNN's output for one camera (0 in state mode)."""
        return 0 if self.cnn is None else int(self.cnn.out_dim)

    @property
    def cached_latent_dim(self) -> int:
        """Size of a cached `image_latent`: every camera's CNN output, concatenated (0 in state mode)."""
        return self.latent_dim * len(self.image_keys)

    def preprocess(self, obs: Mapping[str, torch.Tensor], augment: bool = False) -> dict[str, torch.Tensor]:
        """uint8 (B, H, W, 3) image -> float (B, 3, H, W) in [0, 1], randomly shifted if `augment`.
        Done once per batch, so the online and the target encoder see the same shifted s'.
        An observation with a cached latent (frozen CNN) is passed through."""
        out = dict(obs)
        if self.cnn is not None and not self._cached(obs):
            for k in self.image_keys:
                out[k] = self.image_to_float(obs[k], augment)
        return out

    def _cached(self, obs: Mapping[str, torch.Tensor]) -> bool:
        if IMAGE_LATENT not in obs:
            return False
        if not self.frozen_cnn:
            raise ObsSpecError(f"observation carries '{IMAGE_LATENT}' (cached CNN latents), but this encoder trains "
                               "its CNN end to end and needs 'image' (set encoder_frozen for cached latents)")
        return True

    def image_features(self, obs: Mapping[str, torch.Tensor], augment: bool = False,
                       preprocessed: bool = False) -> torch.Tensor:
        """The CNN's output for the observation's images, (B, L) per camera concatenated in
        `image_keys` order, or the cached latent (frozen CNN: the same concatenation, stored)."""
        if self.cnn is None:
            raise ObsSpecError("state-mode encoder has no image features")
        if self._cached(obs):
            z = obs[IMAGE_LATENT].float()
            if z.dim() != 2 or z.shape[1] != self.cached_latent_dim:
                raise ObsSpecError(f"'{IMAGE_LATENT}' has shape {tuple(z.shape)}, expected (B, {self.cached_latent_dim})")
            return z
        xs = [obs[k] if preprocessed else self.image_to_float(obs[k], augment) for k in self.image_keys]
        if len(xs) == 1:
            return self.cnn(xs[0])
        B = xs[0].shape[0]
        z = self.cnn(torch.cat(xs, dim=0))  # one pass over every camera's images (shared weights)
        return torch.cat(z.split(B, dim=0), dim=-1)

    def forward(self, obs: Mapping[str, torch.Tensor], augment: bool = False,
                preprocessed: bool = False) -> torch.Tensor:
        if not preprocessed:
            obs = self.preprocess(obs, augment)
        parts = []
        if self.cnn is not None:
            parts.append(self.image_features(obs, preprocessed=True))
        for k in self.vector_keys:
            x = obs[k].float()
            if k in self.normalized_keys:
                x = (x - getattr(self, f"{k}_mean")) / getattr(self, f"{k}_std")
                if math.isfinite(self.obs_clip):
                    x = x.clamp(-self.obs_clip, self.obs_clip)
            parts.append(x)
        if self.instruction is not None:
            ids = obs.get("instruction")
            if ids is None:
                raise ObsSpecError(f"observation lacks 'instruction' (the agent knows {self.num_instructions} instructions)")
            parts.append(self.instruction(ids.long()))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


class FrameEncoder:
    """A frozen CNN as a function of camera frames: uint8 (N, H, W, 3) -> float32 latents (N, L).

    What the replay buffers call to store latents instead of images (robot_calql.data.replay).
    Runs in fp32 without augmentation, in chunks of `chunk` frames, so a cached latent is the
    value the acting policy computes for the same frame. With several cameras (`camera_keys`,
    main first) it takes a mapping {camera key: (N, H, W, 3)} and returns every camera's latent
    concatenated, (N, L * cameras); `latent_dim` is that stored size. `frozen_only=False` also
    takes a CNN that trains end to end (to read its latents, as benchmarks/bench_encoder_probe.py
    does); a replay's cache needs a frozen one."""

    def __init__(self, encoder: ObsEncoder, chunk: int = 256, *, frozen_only: bool = True):
        if encoder.cnn is None or (frozen_only and not encoder.frozen_cnn):
            raise ObsSpecError("FrameEncoder needs a pixel encoder with a frozen CNN")
        self.encoder = encoder
        self.image_shape: tuple[int, int, int] = tuple(encoder.spec["image"])  # type: ignore[assignment]
        self.camera_keys: tuple[str, ...] = tuple(encoder.image_keys)
        self.latent_dim = encoder.cached_latent_dim
        self.chunk = int(chunk)

    def __call__(self, images: np.ndarray | torch.Tensor | Mapping[str, np.ndarray | torch.Tensor]) -> np.ndarray:
        if isinstance(images, Mapping):
            missing = [k for k in self.camera_keys if k not in images]
            if missing:
                raise ObsSpecError(f"frames lack the camera(s) {missing} (the encoder takes {list(self.camera_keys)})")
            parts = [self._encode(images[k], k) for k in self.camera_keys]
            if len({len(p) for p in parts}) > 1:
                raise ObsSpecError(f"cameras {list(self.camera_keys)} have {[len(p) for p in parts]} frames: "
                                   "every camera needs one frame per step")
            return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if len(self.camera_keys) > 1:
            raise ObsSpecError(f"the encoder takes {len(self.camera_keys)} cameras {list(self.camera_keys)}: "
                               "pass {camera key: frames}")
        return self._encode(images, "image")

    @torch.inference_mode()
    def _encode(self, images: np.ndarray | torch.Tensor, key: str) -> np.ndarray:
        if not isinstance(images, torch.Tensor):
            images = np.asarray(images)
            if not images.flags.writeable:  # a memory-mapped dataset: torch wants its own copy
                images = images.copy()
        imgs = torch.as_tensor(images)
        if imgs.dim() != 4 or tuple(imgs.shape[1:]) != self.image_shape or imgs.dtype != torch.uint8:
            raise ObsSpecError(f"'{key}' frames must be uint8 (N, *{self.image_shape}), got {imgs.dtype} "
                               f"{tuple(imgs.shape)}")
        device = next(self.encoder.cnn.parameters()).device
        out = np.empty((imgs.shape[0], self.encoder.latent_dim), dtype=np.float32)
        for i in range(0, imgs.shape[0], self.chunk):
            x = self.encoder.image_to_float(imgs[i : i + self.chunk].to(device), augment=False)
            out[i : i + self.chunk] = self.encoder.cnn(x).float().cpu().numpy()
        return out
