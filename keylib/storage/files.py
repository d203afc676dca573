"""Small files beside the tables (run manifests, the report): written whole or not at all,
read back, copied up; a local folder or ``s3://`` alike."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import pyarrow.fs as pafs

from .io import atomic_write_text
from .io import is_remote
from .locations import filesystem, local_filesystem, storage_error

__all__ = ["write_text", "read_texts", "upload_folder"]


def write_text(uri: str, text: str, *, s3_settings: Mapping | None = None) -> str:
    """Write a small text file whole or not at all: a single PUT on S3, temp file + fsync
    + rename locally."""
    if not is_remote(uri):
        return str(atomic_write_text(uri, text))
    fs, path = filesystem(uri, s3_settings)
    try:
        with fs.open_output_stream(path) as out:
            out.write(text.encode("utf-8"))
    except Exception as exc:  # noqa: BLE001
        raise storage_error(f"cannot write {uri}", exc) from None
    return uri


def read_texts(folder_uri: str, *, suffix: str = ".json", s3_settings: Mapping | None = None) -> list[str]:
    """The texts of the files directly in a folder whose names end with ``suffix``, in
    name order (empty when the folder does not exist)."""
    fs, root = filesystem(folder_uri, s3_settings)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        names = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(suffix))
        texts = []
        for name in names:
            with fs.open_input_stream(name) as f:
                texts.append(f.read().decode("utf-8"))
        return texts
    except Exception as exc:  # noqa: BLE001
        raise storage_error(f"cannot read {folder_uri}", exc) from None


def upload_folder(folder: str | os.PathLike, uri: str, *, s3_settings: Mapping | None = None) -> None:
    """Copy the files of a local folder (a report) to a folder or ``s3://`` prefix."""
    fs, root = filesystem(uri, s3_settings)
    try:
        fs.create_dir(root, recursive=True)
        pafs.copy_files(str(Path(folder).resolve()), root, source_filesystem=local_filesystem(),
                        destination_filesystem=fs)
    except Exception as exc:  # noqa: BLE001
        raise storage_error(f"cannot write {uri}", exc) from None
