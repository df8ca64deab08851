"""Image and mask files: any common encoding in, ``(H, W, 3)`` uint8 RGB or ``(H, W)`` int64 labels out; atomic saves.

Loading rules, written once so the CLI, the app and the benchmark read a file alike:

* EXIF orientation is applied (``PIL.ImageOps.exif_transpose``, or the TIFF Orientation tag for files read with
  tifffile), so arrays are upright as viewers show them. Masks get the same treatment, so a phone photo and the mask
  drawn on it in a viewer line up.
* Integer samples deeper than 8 bits are scaled by their bit depth: ``round(v * 255 / (2**bits - 1))`` (16-bit grey
  PNG, 12- or 16-bit TIFF). Float samples in 0..1 are multiplied by 255 and rounded.
* Grey, palette, CMYK, YCbCr and LAB images become RGB (Pillow's conversions; ICC profiles are not applied).
* Alpha is composited onto white, with a logged warning when any pixel is not opaque: the colours under transparent
  pixels are undefined (often black), and the CRF's colour kernel should see what a viewer shows on white.
* TIFFs with more than 8 bits per sample (including float) or that Pillow cannot identify are read with tifffile.
  16-bit RGB PNGs are reduced to 8 bits by Pillow (high byte, at most 1 level from the rounded value).
* Multi-frame files (GIF, multi-page TIFF): the first frame.
* A file with more than :data:`MAX_PIXELS` pixels is refused before its pixels are decoded (decompression bombs).

Errors: a missing file raises ``FileNotFoundError``; anything else that makes a file unusable raises
:class:`ImageError` (a ``ValueError``) whose message names the file and the fix.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tifffile
from numpy.typing import ArrayLike
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .files import check_pixels, open_pil
from .labels import VOID

__all__ = ["ImageError", "MAX_PIXELS", "IMAGE_SUFFIXES", "load_image", "load_mask", "check_pair", "save_mask",
           "save_image", "atomic_write", "is_temporary", "voc_palette", "find_pairs"]

logger = logging.getLogger(__name__)

MAX_PIXELS = 300_000_000
"""Largest image (H·W pixels) the loaders accept, 300 MP (about 900 MB as RGB); raise it, or pass ``max_pixels``."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".ppm", ".pgm")
"""File suffixes :func:`find_pairs` treats as images or masks (case-insensitive)."""

_TIFF_SUFFIXES = (".tif", ".tiff")
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]+\.tmp(\.[^.]+)?$")  # atomic_write's temporaries (and older ones)
_ORIENTATION = {  # EXIF/TIFF Orientation tag → the NumPy equivalent of ImageOps.exif_transpose
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


class ImageError(InputError):
    """A file that cannot be used as an image or mask; the message names the file and the fix."""


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file; check the path (relative paths start at {Path.cwd()}).")
    if p.is_dir():
        raise ImageError(f"{p} is a folder, not an image file; pass one file (find_pairs lists a dataset folder).")
    return p


def _check_pixels(path: Path, height: int, width: int, max_pixels: int | None) -> None:
    check_pixels(path, height, width, max_pixels, error=ImageError)


def _read(path: Path, max_pixels: int | None, *, mask: bool) -> tuple[np.ndarray, int]:
    """Decoded, upright pixels ``(H, W)`` or ``(H, W, S)`` and the full-scale value of integer samples."""
    try:
        im = open_pil(path)
    except UnidentifiedImageError:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            return _read_tiff(path, max_pixels)
        raise ImageError(f"{path} is not in an image format Pillow or tifffile can read; convert it to PNG "
                         f"(masks: an 8-bit index or grey PNG).") from None
    except OSError as exc:
        raise ImageError(f"{path} could not be opened ({exc}); check that it is a readable image file.") from exc
    with im:
        _check_pixels(path, im.height, im.width, max_pixels)
        if im.format == "TIFF" and max(im.tag_v2.get(258, (8,))) > 8:
            return _read_tiff(path, max_pixels)
        try:
            im.load()
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{path}: {exc}; if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS.") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"{path} is truncated or corrupt ({exc}); re-export or re-download it.") from exc
        return _pil_pixels(ImageOps.exif_transpose(im), path, mask=mask)


def _pil_pixels(im: Image.Image, path: Path, *, mask: bool) -> tuple[np.ndarray, int]:
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16), 65535
    if mode == "I":
        return np.asarray(im), 65535
    if mode in ("F", "L", "LA", "RGB", "RGBA"):
        return np.asarray(im), 255
    if mode == "1":
        return (np.asarray(im).astype(np.uint8) if mask else np.asarray(im.convert("L"))), 255
    if mode in ("P", "PA"):
        if mask:
            return np.asarray(im.getchannel(0)), 255
        return np.asarray(im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")), 255
    conversions = {"La": "LA", "RGBa": "RGBA", "RGBX": "RGB"}
    if mode in conversions:
        return np.asarray(im.convert(conversions[mode])), 255
    if not mask and mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(im.convert("RGB")), 255
    kind = "mask" if mask else "image"
    raise ImageError(f"{path} has Pillow mode {mode!r}, which crfcore cannot use as a{'n' * (not mask)} {kind}; "
                     f"save it as an 8-bit {'index or grey' if mask else 'RGB'} PNG.")


def _read_tiff(path: Path, max_pixels: int | None) -> tuple[np.ndarray, int]:
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            _check_pixels(path, page.imagelength, page.imagewidth, max_pixels)
            pixels, axes = page.asarray(), page.axes
            bits, photometric = int(page.bitspersample), int(page.photometric)
            tag = page.tags.get(274)
            orientation = int(tag.value) if tag is not None else 1
    except (tifffile.TiffFileError, ValueError, OSError, KeyError, IndexError, zlib.error, struct.error) as exc:
        raise ImageError(f"{path} is a truncated or corrupt TIFF, or needs a codec tifffile lacks ({exc}); "
                         f"re-export it, install imagecodecs if a codec is named, or convert it to PNG.") from exc
    if "S" in axes:
        pixels = np.moveaxis(pixels, axes.index("S"), -1)
    if pixels.ndim not in (2, 3):
        raise ImageError(f"{path} is a TIFF with axes {axes!r}; expected one 2-D image (YX or YXS). Save the "
                         f"plane you want as PNG.")
    if photometric not in (0, 1, 2):
        raise ImageError(f"{path} is a TIFF with photometric interpretation {photometric} (not grey or RGB); "
                         f"convert it to RGB.")
    full = 2 ** bits - 1
    if photometric == 0:
        pixels = (1.0 if pixels.dtype.kind == "f" else full) - pixels
    return np.ascontiguousarray(_ORIENTATION.get(orientation, lambda a: a)(pixels)), full


def _to_uint8(pixels: np.ndarray, full: int, path: Path) -> np.ndarray:
    """Samples of any depth → uint8 0..255 (integers scaled by ``full``, floats by 255)."""
    if pixels.dtype == np.uint8:
        return pixels
    values = pixels.astype(np.float64)
    if pixels.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise ImageError(f"{path} has NaN or infinite samples; fix the file or replace them before loading.")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 255:
            raise ImageError(f"{path} has float samples in {low:g}..{high:g}; expected 0..1. Rescale it to 0..1 "
                             f"or save it as 8-bit PNG.")
        if high > 1:
            logger.warning("%s: float samples reach %g, read as 0..255 rather than 0..1", path, high)
        else:
            values = values * 255.0
    else:
        low, high = int(pixels.min()), int(pixels.max())
        if low < 0 or high > full:
            raise ImageError(f"{path} has integer samples in {low}..{high}, outside 0..{full}; save it as "
                             f"8- or 16-bit unsigned PNG.")
        values = values * (255.0 / full)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _to_rgb(pixels: np.ndarray, path: Path) -> np.ndarray:
    """``(H, W)`` / ``(H, W, 1..4)`` uint8 → ``(H, W, 3)``, alpha composited onto white."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[2]
    if channels not in (1, 2, 3, 4):
        raise ImageError(f"{path} has {channels} channels; expected grey, grey+alpha, RGB or RGBA.")
    colour = pixels[..., :3] if channels >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    if channels in (2, 4):
        alpha = pixels[..., -1:].astype(np.float64) / 255.0
        if (alpha < 1).any():
            logger.warning("%s has transparent pixels; composited onto white (alpha is not used)", path)
            colour = np.rint(colour * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.array(colour, order="C")  # a writable copy: Pillow's buffers are read-only


def load_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as upright RGB.

    Args:
        path: PNG, JPEG, TIFF, BMP, WebP, GIF or PPM/PGM file, in any bit depth and colour mode Pillow or tifffile
            decodes (see the module docstring for the conversions).
        max_pixels: refuse files with more pixels (H·W); None means :data:`MAX_PIXELS`.

    Returns:
        ``(H, W, 3)`` uint8 RGB, 0..255.

    Raises:
        FileNotFoundError: no such file.
        ImageError: unknown format, truncated or corrupt file, too many pixels, unusable mode or sample range.
    """
    p = _existing(path)
    pixels, full = _read(p, max_pixels, mask=False)
    return _to_rgb(_to_uint8(pixels, full, p), p)


def load_mask(path: str | os.PathLike, *, num_classes: int | None = None, palette: ArrayLike | None = None,
              max_pixels: int | None = None) -> np.ndarray:
    """Read a label mask as class indices.

    Accepted: 8- or 16-bit grey (value = class), palette PNG (the palette index is the class; the colours are
    ignored), 1-bit, RGB(A) whose three channels are equal (read as grey), and RGB colour masks when ``palette`` says
    which colour is which class (e.g. ``voc_palette()`` for PASCAL VOC, whose void colour decodes to 255). Alpha is
    dropped. EXIF orientation is applied as in :func:`load_image`.

    Args:
        path: the mask file.
        num_classes: C; when given, labels outside 0..C-1 other than 255 (void) are an error.
        palette: ``(N, 3)`` uint8 RGB colours; colour ``palette[k]`` decodes to label k.
        max_pixels: as in :func:`load_image`.

    Returns:
        ``(H, W)`` int64 labels ≥ 0.

    Raises:
        FileNotFoundError: no such file.
        ImageError: unreadable file; float samples; a colour mask without ``palette`` or with colours not in it;
            labels ≥ ``num_classes``.
    """
    p = _existing(path)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}.")
    pixels, _ = _read(p, max_pixels, mask=True)
    if pixels.dtype.kind == "f":
        raise ImageError(f"{p} has float samples; a mask holds integer class indices. Save it as an 8-bit index "
                         f"or grey PNG (crfcore.io.save_mask).")
    if pixels.ndim == 3:
        if pixels.shape[2] == 2:
            pixels = pixels[..., 0]
        elif (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all():
            pixels = pixels[..., 0]
        elif palette is None:
            raise ImageError(f"{p} is an RGB colour mask; pass palette= (the (N, 3) colour of each class, e.g. "
                             f"crfcore.io.voc_palette() for PASCAL VOC) or convert it to an index PNG.")
        else:
            pixels = _decode_colours(pixels[..., :3], palette, p)
    labels = pixels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ImageError(f"{p} has negative labels (min {labels.min()}); labels are class indices ≥ 0.")
    if num_classes is not None:
        bad = np.unique(labels[(labels >= num_classes) & (labels != VOID)])
        if bad.size:
            shown = ", ".join(str(v) for v in bad[:10]) + (", …" if bad.size > 10 else "")
            raise ImageError(f"{p} has labels {shown} outside 0..{num_classes - 1} ({VOID} = void is allowed); pass "
                             f"num_classes={int(bad.max()) + 1} if they are classes, or remap them.")
    return labels


def _check_palette(palette: ArrayLike) -> np.ndarray:
    pal = np.asarray(palette)
    if (pal.ndim != 2 or pal.shape[1] != 3 or not 1 <= pal.shape[0] <= 256 or pal.dtype.kind not in "iu"
            or pal.min() < 0 or pal.max() > 255):
        raise InputError(f"palette must be (N, 3) integer RGB colours 0..255 with 1 ≤ N ≤ 256, got shape "
                         f"{pal.shape} dtype {pal.dtype}; crfcore.io.voc_palette() gives the PASCAL VOC one.")
    return pal.astype(np.int64)


def _decode_colours(rgb: np.ndarray, palette: ArrayLike, path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 colours → ``(H, W)`` indices into ``palette`` (first match for repeated colours)."""
    index: dict[int, int] = {}
    for k, (r, g, b) in enumerate(_check_palette(palette).tolist()):
        index.setdefault((r << 16) | (g << 8) | b, k)
    if rgb.dtype != np.uint8:
        raise ImageError(f"{path} is a {rgb.dtype} colour mask; palette decoding needs 8-bit RGB.")
    wide = rgb.astype(np.int64)
    colours, inverse = np.unique((wide[..., 0] << 16) | (wide[..., 1] << 8) | wide[..., 2], return_inverse=True)
    missing = [c for c in colours.tolist() if c not in index]
    if missing:
        shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in missing[:8])
        raise ImageError(f"{path} has {len(missing)} colour(s) not in the palette: {shown}; pass the palette the "
                         f"mask was drawn with, or convert the mask to an index PNG.")
    return np.array([index[c] for c in colours.tolist()], dtype=np.int64)[inverse.reshape(rgb.shape[:2])]


def check_pair(image: np.ndarray, mask: np.ndarray, image_path: str | os.PathLike,
               mask_path: str | os.PathLike) -> None:
    """Raise :class:`ImageError` naming both files and sizes unless ``image`` (H, W, 3) and ``mask`` (H, W) match."""
    if image.shape[:2] != mask.shape[:2]:
        raise ImageError(f"image {image_path} is {image.shape[0]}×{image.shape[1]} (H×W) but mask {mask_path} is "
                         f"{mask.shape[0]}×{mask.shape[1]}; a mask must match its image pixel for pixel. Re-export "
                         f"the mask at the image's size (resize with nearest neighbour, never bilinear).")


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step (``os.replace``).

    Readers see the old file or the new one, never a partial one. The caller writes the temporary file (it does not
    exist yet), by path or by an open handle. The temporary name ends with ``path``'s suffix
    (``.out.npy.<hex>.tmp.npy``), so writers that choose a format by suffix, or append one (``np.save``), write
    exactly that file. It is flushed to disk before the replace, and the folder after it, so the new file survives a
    crash once this returns. On any exception the temporary file is removed, ``path`` is left as it was, and the
    exception propagates. :func:`is_temporary` recognises the temporary names (to clean up after a killed writer).

    Every file crfcore writes goes through here (masks, images, arrays, exports, presets, project revisions).

        >>> with atomic_write("mask.png") as tmp:          # doctest: +SKIP
        ...     Image.fromarray(labels).save(tmp, format="PNG")
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist; create it first.")
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp{target.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"atomic_write({target}): the writer created no file at {tmp.name}; write to the "
                               f"yielded path exactly (crfcore bug if it was crfcore's writer).")
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def is_temporary(name: str) -> bool:
    """True for the name of a temporary file :func:`atomic_write` makes (left behind only by a killed writer)."""
    return _TEMPORARY.match(name) is not None


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_format(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot save {path}: unknown suffix {path.suffix!r}; use .png (lossless), .tif or .jpg.")
    return fmt


def save_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write ``rgb`` ``(H, W, 3)`` uint8 0..255 atomically; the format follows the suffix (PNG is lossless)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"rgb must be (H, W, 3) uint8, got shape {rgb.shape} dtype {rgb.dtype}; convert with "
                         f"np.clip(x, 0, 255).astype(np.uint8).")
    target = Path(path)
    fmt = _save_format(target)
    with atomic_write(target) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format=fmt)


def save_mask(path: str | os.PathLike, labels: ArrayLike, *, palette: ArrayLike | None = None) -> None:
    """Write labels as an index PNG, atomically.

    Labels up to 255 give an 8-bit PNG: grey (pixel value = class) without ``palette``, palette PNG with it (pixel
    index = class, colours for viewers). Larger labels (up to 65535) give a 16-bit grey PNG. :func:`load_mask`
    reads every variant back exactly.

    Args:
        path: a ``.png`` path.
        labels: ``(H, W)`` integer class indices 0..65535 (255 is void by convention).
        palette: optional ``(N, 3)`` uint8 RGB colours, N ≤ 256, one per label value used (:func:`voc_palette`).

    Raises:
        ValueError: wrong shape or dtype, labels out of range, a bad palette, or not a ``.png`` path.
    """
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise InputError(f"masks are saved as PNG; {target} has suffix {target.suffix!r}. Use a .png path.")
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.dtype.kind not in "biu":
        raise InputError(f"labels must be (H, W) integer class indices, got shape {arr.shape} dtype {arr.dtype}.")
    low, high = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if low < 0 or high > 65535:
        raise InputError(f"labels must be in 0..65535 to fit a PNG, got {low}..{high}; remap them first.")
    if high > 255:
        if palette is not None:
            raise InputError(f"labels reach {high}, but a palette PNG holds at most 256 labels; pass palette=None "
                             f"(a 16-bit grey PNG is written) or remap the labels to 0..255.")
        image = Image.fromarray(arr.astype(np.uint16))
    else:
        image = Image.fromarray(arr.astype(np.uint8))
        if palette is not None:
            pal = _check_palette(palette)
            if high >= pal.shape[0]:
                raise InputError(f"labels reach {high} but the palette has {pal.shape[0]} colours; pass a longer "
                                 f"palette (voc_palette(256) has one for every 8-bit label).")
            image.putpalette(pal.astype(np.uint8).ravel().tolist())
    with atomic_write(target) as tmp:
        image.save(tmp, format="PNG")


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map ``(n, 3)`` uint8: label k's colour spreads k's bits, three at a time, over R, G, B
    from the most significant bit down (0 black, 1 dark red, 15 person pink, 255 void cream (224, 224, 192))."""
    if not 1 <= n <= 256:
        raise InputError(f"n must be in 1..256 (an 8-bit palette), got {n}.")
    index = np.arange(n)
    colours = np.zeros((n, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            colours[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return colours.astype(np.uint8)


def _by_stem(files: list[Path], where: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for f in files:
        if f.stem in found:
            raise ImageError(f"{where} has two files for {f.stem!r}: {found[f.stem].name} and {f.name}; keep one.")
        found[f.stem] = f
    return found


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir()
                  if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES)


def find_pairs(folder: str | os.PathLike) -> list[tuple[Path, Path]]:
    """List the (image, mask) files of a dataset folder, sorted by stem.

    Two layouts are recognised:

    * ``folder/images/<stem>.<ext>`` with ``folder/masks/<stem>.<ext>`` (the layout of ``../shared/data/*``);
    * a flat folder of ``<stem>.<ext>`` images with ``<stem>_mask.<ext>`` masks (``resources/samples``).

    ``<ext>`` is any of :data:`IMAGE_SUFFIXES` and may differ between an image and its mask; other files, hidden
    files and other subfolders are ignored.

    Returns:
        ``[(image_path, mask_path), ...]``, at least one pair.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ImageError: an image without a mask or a mask without an image (naming them), two files with one stem, only
            one of ``images/`` and ``masks/``, or no pairs at all.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist or is not a folder.")
    images_dir, masks_dir = root / "images", root / "masks"
    if images_dir.is_dir() != masks_dir.is_dir():
        have, lack = ("images", "masks") if images_dir.is_dir() else ("masks", "images")
        raise ImageError(f"{root} has {have}/ but no {lack}/; put images in images/ and masks of the same stem "
                         f"in masks/.")
    if images_dir.is_dir():
        images = _by_stem(_image_files(images_dir), images_dir)
        masks = _by_stem(_image_files(masks_dir), masks_dir)
        convention = "images/<stem>.png with masks/<stem>.png"
    else:
        files = _image_files(root)
        images = _by_stem([f for f in files if not f.stem.endswith("_mask")], root)
        masks = {s.removesuffix("_mask"): f for s, f in _by_stem([f for f in files if f.stem.endswith("_mask")],
                                                                 root).items()}
        convention = "<stem>.png with <stem>_mask.png, or images/ and masks/ subfolders"
    lonely_images = sorted(str(images[s]) for s in images.keys() - masks.keys())
    lonely_masks = sorted(str(masks[s]) for s in masks.keys() - images.keys())
    if lonely_images or lonely_masks:
        parts = [f"{label} ({len(names)}): {', '.join(names[:5])}{', …' if len(names) > 5 else ''}"
                 for label, names in (("images without a mask", lonely_images),
                                      ("masks without an image", lonely_masks)) if names]
        raise ImageError(f"{root}: {'; '.join(parts)}. Pair them by name ({convention}) or move them out.")
    if not images:
        raise ImageError(f"{root} holds no image/mask pairs; expected {convention}.")
    return [(images[s], masks[s]) for s in sorted(images)]
