"""Optional neural refiner behind the 'warp+refiner' generator (off by default; imports torch).

A small conditional U-Net (about 0.1 M parameters at 24 channels) takes the warped crop, heatmaps of the target
landmarks (5 channels: brows, eyes, nose, mouth, jaw) and one constant plane per conditioning AU,
and predicts a bounded residual added to the warped crop. It is trained on pairs of photos of the same
people (e.g. the London neutral -> smiling pairs): the neutral photo warped onto the real smile's
landmarks is the input, the real smiling photo aligned the same way the target, L1 loss inside the
face. A few epochs on a CPU take minutes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fewshot.analysis import Analyzer
from fewshot.crop import warp_crop
from fewshot.errors import CheckpointError, InputError
from fewshot.io import atomic_path, read_image
from fewshot.landmarks import MIRROR

from .appearance import pair_photos
from .aus import intensity_level
from .grid import Grid, as_grid
from .profile import fit_profile
from .render import GENERATORS, GeneratedBatch, Generator, WarpGenerator
from .warp import crop_transform

COND_AUS = ("AU01", "AU02", "AU04", "AU06", "AU09", "AU12", "AU17", "AU25", "AU26")
GROUPS = [range(17, 27), range(36, 48), range(27, 36), range(48, 68), range(0, 17)]
N_IN = 3 + len(GROUPS) + len(COND_AUS)


def heatmaps(landmarks: np.ndarray, size: int, sigma: float | None = None) -> np.ndarray:
    """(N, 68, 2) crop px -> (N, 5, size, size) float32 grouped Gaussian heatmaps."""
    sigma = sigma or size / 96
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.zeros((len(landmarks), len(GROUPS), size, size), np.float32)
    for n, lm in enumerate(landmarks):
        for g, idx in enumerate(GROUPS):
            for x, y in lm[list(idx)]:
                x0, x1 = int(max(0, x - 3 * sigma)), int(min(size, x + 3 * sigma + 1))
                y0, y1 = int(max(0, y - 3 * sigma)), int(min(size, y + 3 * sigma + 1))
                if x1 > x0 and y1 > y0:
                    patch = np.exp(-((xs[y0:y1, x0:x1] - x) ** 2 + (ys[y0:y1, x0:x1] - y) ** 2) / (2 * sigma**2))
                    np.maximum(out[n, g, y0:y1, x0:x1], patch, out=out[n, g, y0:y1, x0:x1])
    return out


def build_net():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))

        def forward(self, x):
            return x + self.body(x)

    class RefinerNet(nn.Module):
        def __init__(self, c: int = 24) -> None:
            super().__init__()
            self.inp = nn.Sequential(nn.Conv2d(N_IN, c, 3, padding=1), nn.SiLU())
            self.down = nn.Sequential(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.SiLU())
            self.mid = nn.Sequential(Block(2 * c), Block(2 * c))
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(2 * c, c, 3, padding=1), nn.SiLU())
            self.out = nn.Conv2d(2 * c, 3, 3, padding=1)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)  # starts as the identity: refined == warped

        def forward(self, x):
            a = self.inp(x)
            b = self.up(self.mid(self.down(a)))
            return (x[:, :3] + 0.25 * torch.tanh(self.out(torch.cat([a, b], 1)))).clamp(0, 1)

    return RefinerNet()


def net_input(images: np.ndarray, landmarks: np.ndarray, aus: np.ndarray):
    """uint8 (N, S, S, 3), (N, 68, 2) crop px, (N, len(COND_AUS)) FACS 0..5 -> torch (N, N_IN, S, S)."""
    import torch

    n, s = len(images), images.shape[1]
    x = np.concatenate([images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0, heatmaps(landmarks, s),
                        np.broadcast_to((aus / 5.0).astype(np.float32)[:, :, None, None], (n, len(COND_AUS), s, s))], 1)
    return torch.from_numpy(np.ascontiguousarray(x))


def load_refiner(path: str | Path):
    import torch

    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no refiner weights; train them with 'fewshot train-generator'")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
        net = build_net()
        net.load_state_dict(ck["state_dict"])
    except Exception as e:
        raise CheckpointError(f"{p}: not a fewshot refiner checkpoint ({type(e).__name__}); retrain with 'fewshot train-generator'") from None
    return net.eval()


@GENERATORS.register("warp+refiner", "the warp generator followed by a small trained conditional U-Net (needs --refiner; torch)")
class RefinedGenerator(Generator):
    """'warp+refiner': the warp generator's crops passed through a trained refiner."""

    name = "warp+refiner"
    options, required = ("refiner", "appearance"), ("refiner",)

    def __init__(self, refiner: str | Path | None = None, appearance: Any = None, batch: int = 32) -> None:
        if refiner is None:
            raise CheckpointError("generator 'warp+refiner' needs --refiner WEIGHTS (train them with 'fewshot train-generator')")
        self.net = load_refiner(refiner)
        self.warp = WarpGenerator(appearance)
        self.warp.name = self.name
        self.batch = batch
        self.refiner_path = str(refiner)

    def render(self, profile: Any, rows: Grid | pd.DataFrame, size: int = 256, full_frame: bool = False) -> GeneratedBatch:
        import torch

        grid = as_grid(rows)
        b = self.warp.render(profile, grid, size, full_frame)
        aus = grid.au_matrix(COND_AUS)
        out = np.empty_like(b.images)
        with torch.no_grad():
            for i in range(0, len(b.images), self.batch):
                y = self.net(net_input(b.images[i:i + self.batch], b.landmarks[i:i + self.batch], aus[i:i + self.batch]))
                out[i:i + self.batch] = np.round(y.numpy().transpose(0, 2, 3, 1) * 255).astype(np.uint8)
        for r in b.records:
            r["refiner"] = Path(self.refiner_path).name
        b.images = out
        return b


def training_pairs(without: str | Path, with_: str | Path, size: int, identities: Sequence[str] | None = None,
                   smile_aus: dict[str, float] | None = None):
    """(inputs uint8, landmarks, aus, targets uint8) for refiner training: each 'without' photo warped
    onto its 'with' twin's landmarks (semantic AU6 on), and the twin aligned the same way."""
    aus = smile_aus or {"AU06": 3.0, "AU12": 4.0}  # a posed smile, roughly (the photos carry no AU codes)
    pairs = pair_photos(without, with_)
    if identities is not None:
        pairs = [p for p in pairs if p[0] in set(identities)]
    if not pairs:
        raise InputError(f"{without}, {with_}: no photo pairs to train on")
    det = Analyzer(embed=False)
    gen = WarpGenerator()
    xs, lms, tg = [], [], []
    for _, p0, p1 in pairs:
        prof = fit_profile(read_image(p0))
        img1 = read_image(p1)
        faces = det.analyze_image(img1, str(p1))
        if not faces:
            continue
        lm1 = faces[0].landmarks
        yaw, pitch, roll = prof.pose_degrees
        row = {"seed": 0, "yaw": yaw, "pitch": pitch, "roll": roll, **aus, "sem_AU06": float(intensity_level(aus.get("AU06", 0)))}
        row.update({f"tx_{k}": lm1[k, 0] for k in range(68)})
        row.update({f"ty_{k}": lm1[k, 1] for k in range(68)})
        b = gen.render(prof, pd.DataFrame([row]), size)
        xs.append(b.images[0])
        lms.append(b.landmarks[0])
        tg.append(warp_crop(img1, crop_transform(lm1, size), size))
    a = np.tile(np.array([[aus.get(k, 0.0) for k in COND_AUS]], np.float32), (len(xs), 1))
    return np.stack(xs), np.stack(lms), a, np.stack(tg)


def train_refiner(inputs: np.ndarray, landmarks: np.ndarray, aus: np.ndarray, targets: np.ndarray, out: str | Path,
                  epochs: int = 3, batch: int = 8, lr: float = 2e-3, seed: int = 0, threads: int | None = None) -> dict:
    """Fit the refiner (L1 inside the face hull, horizontal-flip augmentation); saves to ``out``.
    ``threads``: torch CPU threads while training (restored after); 1 is fastest on a busy 2-core box."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(inputs, landmarks, aus, targets, out, epochs, batch, lr, seed)
    finally:
        torch.set_num_threads(before)


def _train(inputs, landmarks, aus, targets, out, epochs, batch, lr, seed) -> dict:
    import cv2
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    s = inputs.shape[1]
    masks = np.zeros((len(inputs), 1, s, s), np.float32)
    for i, lm in enumerate(landmarks):
        cv2.fillConvexPoly(masks[i, 0], cv2.convexHull(np.round(lm).astype(np.int32)), 1.0)
    net = build_net()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    x_all = net_input(inputs, landmarks, aus)
    t_all = torch.from_numpy(targets.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    m_all = torch.from_numpy(masks)
    flip_lm = landmarks[:, MIRROR].copy()
    flip_lm[..., 0] = s - 1 - flip_lm[..., 0]
    x_flip = net_input(inputs[:, :, ::-1], flip_lm, aus)

    def l1(pred, tgt, m):
        return ((pred - tgt).abs() * m).sum() / (3 * m.sum() + 1e-6)

    with torch.no_grad():
        base = float(l1(x_all[:, :3], t_all, m_all))
    for _ in range(epochs):
        order = rng.permutation(len(inputs))
        for k in range(0, len(order), batch):
            idx = torch.from_numpy(order[k:k + batch])
            flip = rng.random() < 0.5
            x = (x_flip if flip else x_all)[idx]
            t = t_all[idx].flip(-1) if flip else t_all[idx]
            m = m_all[idx].flip(-1) if flip else m_all[idx]
            loss = l1(net(x), t, m)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        refined = float(l1(net(x_all), t_all, m_all))
    with atomic_path(out) as tmp:
        torch.save({"state_dict": net.state_dict(), "cond_aus": list(COND_AUS), "size": s, "epochs": epochs}, tmp)
    return {"n_pairs": len(inputs), "l1_warp": base, "l1_refined": refined}


def train_refiner_from_folders(without, with_, out, epochs: int = 3, size: int = 128, identities=None, seed: int = 0, threads: int = 1) -> dict:
    """``fewshot train-generator``: :func:`training_pairs` then :func:`train_refiner`."""
    x, lm, a, t = training_pairs(without, with_, size, identities)
    return train_refiner(x, lm, a, t, out, epochs=epochs, seed=seed, threads=threads)
