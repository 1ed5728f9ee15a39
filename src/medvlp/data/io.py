"""Low-level readers: npz, PNG/JPEG, DICOM, NIfTI, plus CT windowing and image stacking.

Every failure raises :class:`medvlp.errors.DataError` naming the file and what was expected.
pydicom and nibabel are optional (``pip install medvlp[medical]``) and imported only when used.
"""
from __future__ import annotations

import io
import logging
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from medvlp.errors import DataError

log = logging.getLogger(__name__)

#: Named CT windows as (center, width) in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "abdomen": (40.0, 400.0),
    "bone": (400.0, 1800.0),
}


def load_npz(path: str | Path, required_keys: Iterable[str]) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` eagerly (so truncation shows up here, not later).

    Object arrays are refused (``allow_pickle=False``): data files must not run code.
    """
    p = Path(path)
    required = list(required_keys)
    expected = "an .npz with keys " + ", ".join(required)
    if not p.is_file():
        raise DataError(p, "file not found", expected)
    try:
        with np.load(p, allow_pickle=False) as z:
            files = set(z.files)
            missing = [k for k in required if k not in files]
            if missing:
                raise DataError(p, f"missing key(s) {', '.join(missing)}; has {sorted(files)}",
                                expected)
            return {k: z[k] for k in z.files}
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError) as e:
        raise DataError(p, f"truncated or corrupt npz ({type(e).__name__}: {e})", expected) from e


def read_image(path_or_bytes: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """Decode a PNG/JPEG (anything Pillow reads) into an array.

    Returns (H, W) uint8 for grayscale, (H, W, 3) uint8 for colour (palette / alpha images are
    converted to RGB), and float32 in [0, 1] for 16-bit grayscale. ``name`` is used in errors
    when bytes are given (e.g. ``archive.zip:ISIC_0024306.jpg``).
    """
    from PIL import Image, UnidentifiedImageError

    where = name if name is not None else (
        "<bytes>" if isinstance(path_or_bytes, bytes) else str(path_or_bytes))
    expected = "a readable PNG or JPEG image"
    try:
        src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else Path(path_or_bytes)
        if isinstance(src, Path) and not src.is_file():
            raise DataError(where, "file not found", expected)
        with Image.open(src) as im:
            im.load()  # forces the full decode: truncated files fail here
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32)
                return np.clip(arr / 65535.0, 0.0, 1.0).astype(np.float32)
            if im.mode == "1":
                im = im.convert("L")
            elif im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            return np.asarray(im).copy()
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(where, f"cannot decode image ({e})", expected) from e


def read_dicom(path: str | Path, apply_voi_lut: bool = False) -> np.ndarray:
    """Read a DICOM image as float32.

    * Modality LUT: ``value = stored * RescaleSlope + RescaleIntercept`` (Hounsfield units for CT).
    * ``apply_voi_lut=True`` applies the VOI LUT or the WindowCenter/WindowWidth of the file.
    * MONOCHROME1 (high value = dark, common for CR/DX) is inverted within the image's own
      range, ``x -> min + max - x``, so that high always means bright.
    """
    pydicom = _import_optional("pydicom")
    from pydicom.pixels import apply_modality_lut, apply_voi_lut as _voi

    p = Path(path)
    expected = "a DICOM file with image pixel data"
    if not p.is_file():
        raise DataError(p, "file not found", expected)
    try:
        ds = pydicom.dcmread(p)
    except Exception as e:  # pydicom raises many types for a bad header
        raise DataError(p, f"not a readable DICOM file ({type(e).__name__}: {e})", expected) from e
    if "PixelData" not in ds:
        raise DataError(p, "has no pixel data", expected)
    try:
        stored = ds.pixel_array
    except Exception as e:  # e.g. no decoder installed for a compressed transfer syntax
        tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise DataError(p, f"pixel data could not be decoded (transfer syntax {tsuid}: {e})",
                        "a decoder for this transfer syntax (e.g. Pillow with JPEG 2000)") from e
    arr = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    if apply_voi_lut:
        arr = np.asarray(_voi(arr, ds), dtype=np.float32)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = (arr.min() + arr.max()) - arr
    return arr.astype(np.float32, copy=False)


def read_nifti(path: str | Path, ndim: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI volume as float32 (scl_slope/scl_inter applied) and its 4x4 affine."""
    nib = _import_optional("nibabel")
    p = Path(path)
    expected = f"a {ndim}D NIfTI image"
    if not p.is_file():
        raise DataError(p, "file not found", expected)
    try:
        img = nib.load(str(p))
        data = img.get_fdata(dtype=np.float32)
    except Exception as e:
        raise DataError(p, f"not a readable NIfTI file ({type(e).__name__}: {e})", expected) from e
    if data.ndim != ndim:
        raise DataError(p, f"has rank {data.ndim} (shape {data.shape}), expected rank {ndim}",
                        expected)
    return data, np.asarray(img.affine, dtype=np.float64)


def window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """CT window: ``clip((hu - (center - width/2)) / width, 0, 1)`` as float32."""
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    lo = center - width / 2.0
    return np.clip((np.asarray(hu, dtype=np.float32) - lo) / width, 0.0, 1.0).astype(np.float32)


def named_window(hu: np.ndarray, name: str) -> np.ndarray:
    """Apply one of :data:`CT_WINDOWS` by name."""
    if name not in CT_WINDOWS:
        raise ValueError(f"unknown CT window {name!r}; known: {sorted(CT_WINDOWS)}")
    return window(hu, *CT_WINDOWS[name])


def resize_image(img: np.ndarray, size: int | tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize a 2D image ((H,W) or (H,W,C), uint8 or float32) to ``size`` (int = square).

    Pillow's bilinear filter antialiases when shrinking; masks use nearest neighbour.
    """
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else size
    if img.shape[:2] == (h, w):
        return img
    resample = Image.NEAREST if nearest else Image.BILINEAR
    if img.dtype == np.uint8:
        return np.asarray(Image.fromarray(img).resize((w, h), resample))
    chans = [img] if img.ndim == 2 else [img[..., c] for c in range(img.shape[-1])]
    out = [np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((w, h), resample))
           for c in chans]
    return (out[0] if img.ndim == 2 else np.stack(out, -1)).astype(img.dtype)


def stack_images(images: Sequence[np.ndarray], names: Sequence[str],
                 size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Stack 2D images into one array.

    With ``size`` every image is resized, and if any image is RGB the grayscale ones are
    repeated to 3 channels. Without ``size`` all shapes and dtypes must agree, else a DataError
    names the first file that differs.
    """
    if not images:
        raise DataError(None, "no images to stack", "at least one readable image")
    if size is not None:
        any_rgb = any(im.ndim == 3 for im in images)
        fixed = []
        for im in images:
            im = resize_image(im, size)
            if any_rgb and im.ndim == 2:
                im = np.repeat(im[..., None], 3, axis=-1)
            fixed.append(im)
        images = fixed
        if len({im.dtype for im in images}) > 1:  # 16-bit (float) next to 8-bit: use [0, 1]
            images = [im.astype(np.float32) / 255.0 if im.dtype == np.uint8 else im
                      for im in images]
    ref_shape, ref_dtype = images[0].shape, images[0].dtype
    for im, name in zip(images, names):
        if im.shape != ref_shape or im.dtype != ref_dtype:
            raise DataError(name, f"image has shape {im.shape} {im.dtype}",
                            f"shape {ref_shape} {ref_dtype} like {names[0]}, or pass size= "
                            "to resize all images")
    return np.stack(images)


def read_images(paths: Sequence[Path], *, skip_bad: bool, source: str | Path
                ) -> tuple[list[np.ndarray], np.ndarray, list[dict[str, Any]]]:
    """Read image files; returns (arrays, kept indices, quarantined items).

    A file that cannot be read raises ``DataError`` naming it, or with ``skip_bad`` is quarantined
    with its reason (and logged under ``source``). All files unreadable is always an error.
    """
    arrays, kept, quarantined = [], [], []
    for i, p in enumerate(paths):
        try:
            arrays.append(read_image(p))
            kept.append(i)
        except DataError as e:
            if not skip_bad:
                raise
            quarantined.append({"item": str(p), "reason": str(e)})
    log_quarantine(Path(source).name, quarantined)
    if not arrays:
        raise DataError(source, f"none of the {len(paths)} images could be read", "at least one readable image")
    return arrays, np.asarray(kept, dtype=np.int64), quarantined


def read_csv_columns(path: Path, columns: Sequence[str]):
    """``pandas.read_csv`` with errors naming the file and any missing column."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except Exception as e:
        raise DataError(path, f"cannot read CSV ({type(e).__name__}: {e})", f"columns {list(columns)}") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(path, f"missing column(s) {missing}", f"columns {list(columns)}")
    return df


def log_quarantine(dataset: str, quarantined: list[dict[str, Any]]) -> None:
    """Say how many items were skipped and which: skip_bad never drops anything silently."""
    if quarantined:
        names = ", ".join(str(q["item"]) for q in quarantined)
        log.warning("%s: quarantined %d bad item(s): %s", dataset, len(quarantined), names)


def _import_optional(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"{module} is needed for this reader: pip install medvlp[medical]") from e
