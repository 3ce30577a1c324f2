"""Images in class folders: ``<data root>/<path>/{train,test[,val]}/<class>/<image>``.

Listing the folders gives each split as ``ImageFiles``: paths, decoded with PIL per sample,
converted to RGB or greyscale and resized to a square (or cropped, with ``transforms``). Whether
they are then decoded once into memory or read per sample while training is decided by
``core.data.loading`` from the decoded size and the memory budget.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.data.base import DATASETS, DatasetError, RawData, Split, resolve_under
from core.data.samples import ImageFiles
from core.errors import DataMissingError
from core.spec import ImageFolderData

# The suffixes torchvision's ImageFolder accepts.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})


def _class_folders(split_dir: Path) -> dict[str, Path]:
    """Class name -> folder, sorted by name (the class index is the rank in that order)."""
    folders = {p.name: p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    return dict(sorted(folders.items()))


def _image_files(folder: Path, root: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    for f in files:
        # A link inside the folder must not reach files outside the data root either.
        if not f.resolve().is_relative_to(root):
            raise DatasetError(f"image {f} links outside the data root {root}")
    return files


def _read_split(
    split_dir: Path, classes: list[str], spec: ImageFolderData, root: Path, *, every_class: bool = False
) -> Split:
    found = _class_folders(split_dir)
    if set(found) != set(classes):
        extra, absent = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
        raise DatasetError(
            f"{split_dir}: class folders differ from train/'s ({len(classes)} classes): "
            f"not in train/: {extra or 'none'}; missing here: {absent or 'none'}"
        )
    images: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        files = _image_files(found[name], root)
        if every_class and not files:
            # A class the model can never learn: almost certainly a mistake in the folder.
            raise DatasetError(f"class folder {found[name]} holds no images")
        images.extend(files)
        labels.extend([index] * len(files))
    if not images:
        raise DatasetError(f"{split_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    x = ImageFiles(images, spec.channels, spec.image_size, spec.transforms)
    return Split(x, torch.tensor(labels, dtype=torch.int64))


@DATASETS.register("imagefolder")
def load_imagefolder(spec: ImageFolderData, data_root: Path) -> RawData:
    """Train and test from their folders; ``val/`` replaces the carved validation split if present."""
    base = resolve_under(data_root, spec.path)
    root = Path(data_root).resolve()
    absent = [str(base / name) for name in ("train", "test") if not (base / name).is_dir()]
    if absent:
        raise DataMissingError(
            f"image folder dataset {spec.path!r}: missing folder(s) {', '.join(absent)}; expected "
            f"{base}/train/<class>/<image> and {base}/test/<class>/<image> (optionally {base}/val/...)"
        )
    classes = list(_class_folders(base / "train"))
    if not classes:
        raise DatasetError(f"{base / 'train'} has no class folders")
    train = _read_split(base / "train", classes, spec, root, every_class=True)
    test = _read_split(base / "test", classes, spec, root)
    val = _read_split(base / "val", classes, spec, root) if (base / "val").is_dir() else None
    return RawData("imagefolder", train, test, classes, val=val)
