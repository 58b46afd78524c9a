"""``AUModel``: a registered backbone + AU occurrence, AU intensity and expression heads.

    model = AUModel("compact", aus=["AU01", "AU12"], intensity_aus=["AU12"])
    out = model(to_tensor(crops), torch.from_numpy(lm))   # crops: (B, S, S, 3) uint8 RGB aligned
    out["occ_logits"]    # (B, n_aus) logits; sigmoid -> P(AU present)
    out["intensity"]     # (B, n_intensity_aus) FACS 0..5
    out["expr_logits"]   # (B, 8) logits over EXPRESSIONS
    out["features"]      # (B, D) backbone features (what continual-learning strategies regularise)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .align import AlignConfig
from .backbones import BACKBONES
from .heads import EXPRESSIONS, ExpressionHead, IntensityHead, OccurrenceHead


def fused_for_inference(module: nn.Module) -> nn.Module:
    """An eval-mode copy with every Conv2d -> BatchNorm2d pair of an nn.Sequential folded into one
    conv (same outputs, 2-3x faster on a CPU for the compact backbone)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    module = copy.deepcopy(module).eval()
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        kids = list(seq)
        out, i = [], 0
        while i < len(kids):
            if i + 1 < len(kids) and isinstance(kids[i], nn.Conv2d) and isinstance(kids[i + 1], nn.BatchNorm2d):
                out.append(fuse_conv_bn_eval(kids[i], kids[i + 1]))
                i += 2
            else:
                out.append(kids[i])
                i += 1
        if len(out) != len(kids):
            for name in list(seq._modules):
                del seq._modules[name]
            for j, m in enumerate(out):
                seq.add_module(str(j), m)
    return module


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 RGB -> float32 (B, 3, S, S) in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(crops))
    return t.permute(0, 3, 1, 2).float().div_(255.0)


class AUModel(nn.Module):
    """Backbone + heads. ``aus``: occurrence AUs (column order of ``occ_logits``); ``intensity_aus``:
    AUs of the ``intensity`` columns; ``expressions``: classes of ``expr_logits``."""

    def __init__(
        self,
        backbone: str = "compact",
        aus: Sequence[str] = ("AU01", "AU02", "AU04", "AU06", "AU12"),
        intensity_aus: Sequence[str] = (),
        expressions: Sequence[str] = EXPRESSIONS,
        align: AlignConfig | None = None,
        backbone_config: dict | None = None,
    ) -> None:
        super().__init__()
        self.align = align or AlignConfig()
        cfg = dict(backbone_config or {})
        cfg.setdefault("crop_size", self.align.crop_size)
        if cfg["crop_size"] != self.align.crop_size:
            raise ValueError(f"backbone crop_size {cfg['crop_size']} != alignment crop_size {self.align.crop_size}")
        self.backbone_name = backbone
        self.backbone = BACKBONES.create(backbone, **cfg)
        self.backbone_config = dict(self.backbone.config)
        self.aus = list(aus)
        self.intensity_aus = list(intensity_aus)
        self.expressions = list(expressions)
        d = self.backbone.out_dim
        self.occ_head = OccurrenceHead(d, len(self.aus))
        self.intensity_head = IntensityHead(d, len(self.intensity_aus))
        self.expr_head = ExpressionHead(d, len(self.expressions))

    @property
    def needs_landmarks(self) -> bool:
        return bool(getattr(self.backbone, "needs_landmarks", False))

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """images: float32 (B, 3, S, S) in [0, 1]; landmarks: (B, 68, 2) crop pixels or None."""
        f = self.backbone(images, landmarks)
        return {"occ_logits": self.occ_head(f), "intensity": self.intensity_head(f), "expr_logits": self.expr_head(f), "features": f}

    def config(self) -> dict:
        """What rebuilds this architecture (stored in checkpoints)."""
        return dict(
            backbone=self.backbone_name,
            backbone_config=dict(self.backbone_config),
            aus=list(self.aus),
            intensity_aus=list(self.intensity_aus),
            expressions=list(self.expressions),
            align=self.align.to_dict(),
        )

    @classmethod
    def from_config(cls, config: dict) -> "AUModel":
        bcfg = dict(config.get("backbone_config") or {})
        bcfg.pop("weights", None)  # the checkpoint carries the trained weights
        return cls(
            backbone=config["backbone"],
            aus=config["aus"],
            intensity_aus=config.get("intensity_aus", []),
            expressions=config.get("expressions", EXPRESSIONS),
            align=AlignConfig(**config.get("align", {})),
            backbone_config=bcfg,
        )

    @torch.no_grad()
    def predict_arrays(self, crops: np.ndarray, landmarks: np.ndarray | None = None, batch_size: int = 128) -> dict[str, np.ndarray]:
        """Inference on aligned crops (N, S, S, 3) uint8 RGB (+ crop landmarks (N, 68, 2)).

        Returns numpy arrays: 'occ_prob' (N, n_aus) in [0, 1], 'intensity' (N, n_int) 0..5,
        'expr_prob' (N, n_expr), 'features' (N, D).
        """
        was = self.training
        self.eval()
        outs: dict[str, list[np.ndarray]] = {"occ_prob": [], "intensity": [], "expr_prob": [], "features": []}
        for i in range(0, len(crops), batch_size):
            lm = None
            if landmarks is not None and self.needs_landmarks:
                lm = torch.from_numpy(np.asarray(landmarks[i : i + batch_size], np.float32))
            o = self(to_tensor(crops[i : i + batch_size]), lm)
            outs["occ_prob"].append(torch.sigmoid(o["occ_logits"]).numpy())
            outs["intensity"].append(o["intensity"].numpy())
            outs["expr_prob"].append(torch.softmax(o["expr_logits"], 1).numpy())
            outs["features"].append(o["features"].numpy())
        self.train(was)
        n_feat = self.backbone.out_dim
        empty = {"occ_prob": len(self.aus), "intensity": len(self.intensity_aus), "expr_prob": len(self.expressions), "features": n_feat}
        return {k: (np.concatenate(v) if v else np.zeros((0, empty[k]), np.float32)) for k, v in outs.items()}
