"""The validation layer every file read goes through: presets, class tables, COCO and labelme JSON, arrays, images.

Each reader checks what a file declares before acting on it:

* sizes: a declared height and width (COCO ``images[].height``, labelme ``imageHeight``, an ``.npy`` header, an
  embedded PNG's header) are checked against the pixel limit (``crfcore.io.MAX_PIXELS``) and against the image the
  file is for *before* anything of that size is allocated;
* structure: every field is looked up with :func:`field`, which names the file, the field's path (``images[0].height``)
  and the fix when the field is missing or of the wrong type (``True`` is never an integer);
* encoding: a file that is not UTF-8 (a PNG passed as a preset), not JSON, or nested too deeply for the parser
  is refused with one clear message.

Every failure is an :class:`~crfcore.errors.InputError` (``FileNotFoundError`` for a missing file).
"""

from __future__ import annotations

import io as _bytes
import json
import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError

__all__ = ["MAX_CLASSES", "pixel_limit", "check_pixels", "check_declared_size", "read_json", "field",
           "int_field", "open_pil", "decode_embedded_image", "check_array_header"]

MAX_CLASSES = 1024
"""Most classes (the first axis of a ``(C, H, W)`` array file) a unary file may declare."""

_PIL_LIMIT_LOCK = threading.Lock()
_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "true or false"}


def pixel_limit(max_pixels: int | None = None) -> int:
    """``max_pixels``, or :data:`crfcore.io.MAX_PIXELS` when None (read at call time, so it can be raised)."""
    from . import io

    return io.MAX_PIXELS if max_pixels is None else max_pixels


def check_pixels(path: str | os.PathLike, height: int, width: int, max_pixels: int | None = None, *,
                 what: str = "", error: type[InputError] = InputError) -> None:
    """Raise ``error`` (an :class:`InputError`) if ``height × width`` is over the pixel limit (decompression
    bombs); ``what`` says which part of ``path`` declared the size."""
    limit = pixel_limit(max_pixels)
    if height * width > limit:
        subject = f"{path}{' ' + what if what else ''}"
        raise error(f"{subject} is {height}×{width} (H×W) = {height * width:,} pixels, over the limit of "
                         f"{limit:,} that guards against decompression bombs; if you trust the file, pass "
                         f"max_pixels={height * width} or raise crfcore.io.MAX_PIXELS.")


def check_declared_size(path: str | os.PathLike, where: str, height: Any, width: Any,
                        image_shape: tuple[int, int] | None, *, max_pixels: int | None = None) -> tuple[int, int]:
    """The ``(H, W)`` a file declares for its image, validated before anything of that size is allocated.

    Args:
        path: the file, for messages.
        where: the fields that declared it, e.g. ``"images[0].height/width"``.
        height, width: the declared values (from JSON: anything).
        image_shape: ``(H, W)`` of the image the file is for, or None when unknown.

    Raises:
        InputError: not positive integers, over the pixel limit, or another size than ``image_shape``.
    """
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{path}: {where} declares {name} {value!r}; expected a positive integer number of "
                             f"pixels. Fix the file (the image's {name}).")
    h, w = int(height), int(width)
    if image_shape is not None and (h, w) != tuple(image_shape):
        raise InputError(f"{path}: {where} declares {h}×{w} (H×W) but the image is {image_shape[0]}×"
                         f"{image_shape[1]}; this annotation is for another image, or the image was resized.")
    check_pixels(path, h, w, max_pixels, what=f"({where})")
    return h, w


def read_json(path: str | os.PathLike, what: str, example: str) -> Any:
    """The parsed JSON of ``path``, a ``what`` (e.g. ``"preset"``) whose expected form ``example`` shows.

    Raises:
        FileNotFoundError: no such file.
        InputError: a folder, not UTF-8 text (e.g. an image), not JSON, or nested too deeply to parse.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist; check the path.")
    if p.is_dir():
        raise InputError(f"{what} {p} is a folder; pass the {what} file ({example}).")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} {p} is not a text file (not UTF-8; an image or archive?); a {what} is JSON such "
                         f"as {example}.") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise InputError(f"{what} {p} nests lists or objects too deeply to read (hundreds of levels; a {what} "
                         f"needs a few); a {what} is JSON such as {example}.") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {p} is not valid JSON ({exc}); a {what} is JSON such as {example}.") from None


def field(container: Any, key: str | int, types: type | tuple[type, ...], path: str | os.PathLike, where: str,
          fix: str, *, default: Any = ...) -> Any:
    """``container[key]``, checked to be of ``types`` (``bool`` is never an ``int`` or a ``float``).

    Args:
        container: a parsed JSON object or list (checked here too).
        key: the field's name or index.
        types: the accepted Python types.
        path: the file, for messages.
        where: the field's path in the file, e.g. ``"annotations[3].segmentation"``.
        fix: what the field should hold, for the message.
        default: returned when the field is missing; without it a missing field is an error.

    Raises:
        InputError: the field is missing (and has no default) or has another type; the message names the file,
            the field and ``fix``.
    """
    types = types if isinstance(types, tuple) else (types,)
    try:
        value = container[key]
    except (KeyError, IndexError, TypeError):
        if default is not ...:
            return default
        raise InputError(f"{path}: {where} is missing; it must hold {fix}.") from None
    numeric = any(t in (int, float) for t in types) and bool not in types
    if not isinstance(value, types) or (numeric and isinstance(value, bool)):
        expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        raise InputError(f"{path}: {where} is {_describe(value)}, expected {expected}: {fix}.")
    return value


def int_field(container: Any, key: str | int, path: str | os.PathLike, where: str, fix: str, **kw: Any) -> int:
    """:func:`field` for an integer (a float with an integral value, as JSON writers produce, is accepted)."""
    value = field(container, key, (int, float), path, where, fix, **kw)
    if isinstance(value, float):
        if not value.is_integer():
            raise InputError(f"{path}: {where} is {value!r}, expected an integer: {fix}.")
        value = int(value)
    return value


def _describe(value: Any) -> str:
    kind = _TYPE_NAMES.get(type(value), type(value).__name__)
    text = json.dumps(value) if isinstance(value, (int, float, str, bool)) or value is None else ""
    return f"{kind} {text[:40]}".strip() if value is not None else "null"


def open_pil(source: str | os.PathLike | _bytes.BytesIO) -> Image.Image:
    """``PIL.Image.open`` with Pillow's own pixel limit lifted (the caller checks ours with :func:`check_pixels`
    before decoding). The limit is a Pillow global: the lock keeps concurrent opens from restoring each other's."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(source)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def decode_embedded_image(data: bytes, path: str | os.PathLike, where: str, *,
                          max_pixels: int | None = None) -> np.ndarray:
    """Decode an image held inside a file (labelme's base64 ``mask``), its size checked before decoding.

    Returns:
        The decoded pixels, ``(H, W)`` or ``(H, W, S)``.

    Raises:
        InputError: not an image, over the pixel limit, truncated.
    """
    try:
        im = open_pil(_bytes.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: {where} is not an image Pillow can read ({exc}); re-save the annotation.") from None
    with im:
        check_pixels(path, im.height, im.width, max_pixels, what=f"({where})")
        try:
            return np.array(im)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InputError(f"{path}: {where} is a truncated or corrupt image ({exc}); re-save the "
                             f"annotation.") from None


def check_array_header(path: str | os.PathLike, image_shape: tuple[int, int] | None = None, *,
                       max_pixels: int | None = None) -> None:
    """Check the shapes an ``.npy`` / ``.npz`` file declares before NumPy allocates them.

    The last two axes are the pixel grid (``(H, W)`` labels, ``(C, H, W)`` maps): H·W must be within the pixel
    limit, at most three axes and :data:`MAX_CLASSES` classes; for an ``(H, W, C)`` array whose first axes are
    ``image_shape`` the message names the axis order.

    Raises:
        InputError: not an ``.npy``/``.npz`` file, an object (pickled) array, or a declared size over the limits.
    """
    p = Path(path)
    try:
        if p.suffix.lower() == ".npz":
            with zipfile.ZipFile(p) as archive:
                for name in archive.namelist():
                    if name.endswith(".npy"):
                        with archive.open(name) as member:
                            _check_header(f"{p}: array {name[:-4]!r}", member, image_shape, max_pixels)
        else:
            with open(p, "rb") as handle:
                _check_header(str(p), handle, image_shape, max_pixels)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"{p} could not be read as an array file ({exc}); save it with np.save or np.savez.") from None


def _check_header(subject: str, handle: Any, image_shape: tuple[int, int] | None, max_pixels: int | None) -> None:
    """Check one ``.npy`` header; ``subject`` names the file (and the archive member) in messages."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        shape, _, dtype = (fmt.read_array_header_1_0(handle) if version == (1, 0)
                           else fmt.read_array_header_2_0(handle))
    except ValueError as exc:
        raise InputError(f"{subject} could not be read as an array (no valid NumPy header: {exc}); save it with "
                         f"np.save or np.savez.") from None
    if dtype.hasobject:
        raise InputError(f"{subject} holds Python objects (dtype {dtype}); crfcore never unpickles. Save a numeric "
                         f"array.")
    if len(shape) < 2:
        return
    if (image_shape is not None and len(shape) == 3 and tuple(shape[:2]) == tuple(image_shape)
            and tuple(shape[1:]) != tuple(image_shape)):
        raise InputError(f"{subject} has shape {shape}, (H, W, C) for this {image_shape[0]}×{image_shape[1]} image; "
                         f"expected (C, H, W). Save np.moveaxis(a, -1, 0) instead.")
    if len(shape) > 3 or (len(shape) == 3 and shape[0] > MAX_CLASSES):
        raise InputError(f"{subject} declares shape {shape}; a unary is (C, H, W) with C ≤ {MAX_CLASSES} or "
                         f"(H, W) labels. Save one image's unary per file.")
    check_pixels(subject, shape[-2], shape[-1], max_pixels, what=f"(array of shape {shape})")
