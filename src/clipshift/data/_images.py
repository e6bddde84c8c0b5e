"""Decoding image files into uint8 tensors (shared by the caption-table and ImageFolder loaders)."""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

# What PIL raises on truncated or garbage files (UnidentifiedImageError is an OSError; some
# plugins raise SyntaxError, ValueError, EOFError or struct.error on broken chunks).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)


class ImageDecodeError(ValueError):
    """An image file that could not be decoded; the message names the file."""


def open_rgb(path: str) -> Image.Image:
    """The image at `path`, fully decoded and converted to RGB."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except DECODE_ERRORS as error:
        raise ImageDecodeError(f"cannot decode image {path}: {error}") from error


def decode_rgb(path: str, size: int | None = None) -> torch.Tensor:
    """uint8 (3, H, W) tensor of the image at `path`, resized to `size` x `size` if given."""
    image = open_rgb(path)
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return pil_to_tensor(image)


def check_size(size: int | None) -> None:
    """ValueError unless `size` is None or a positive int."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")


def decode_many(paths: Sequence[str], size: int | None, num_workers: int,
                skip_errors: bool) -> Iterator[tuple[int, torch.Tensor | None]]:
    """(index, image or None when undecodable and `skip_errors`) in order, decoded on threads."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")

    def one(path: str) -> torch.Tensor | None:
        try:
            return decode_rgb(path, size)
        except ImageDecodeError:
            if skip_errors:
                return None
            raise

    if num_workers == 0:
        yield from ((i, one(p)) for i, p in enumerate(paths))
        return
    with ThreadPoolExecutor(num_workers) as pool:
        yield from enumerate(pool.map(one, paths))


def stack_into(images: Iterator[tuple[int, torch.Tensor | None]], paths: Sequence[str],
               progress_bar) -> tuple[torch.Tensor, list[int]]:
    """Stack decoded images into one preallocated tensor; return it and the kept indices.

    All images must share the first one's shape (ValueError naming the first that does not)."""
    out, kept = None, []
    for i, image in images:
        progress_bar.update(1)
        if image is None:
            continue
        if out is None:
            out = torch.empty((len(paths), *image.shape), dtype=torch.uint8)
        elif image.shape != out.shape[1:]:
            raise ValueError(f"{paths[i]} has shape {tuple(image.shape)}, but {paths[kept[0]]} has "
                             f"{tuple(out.shape[1:])}; pass size= to resize all images")
        out[len(kept)] = image
        kept.append(i)
    if out is None:
        return torch.empty((0,), dtype=torch.uint8), kept
    return (out if len(kept) == len(paths) else out[: len(kept)].clone()), kept
