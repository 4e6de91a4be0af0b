"""Finding a built-in dataset's files under the data root, and the error when they are not there."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from uncert_cli.core.errors import UserError

# A "file set" maps a role ("images", "labels") to the names that file may have, in order of preference.
FileSet = Mapping[str, Sequence[str]]


def files_in(folder: Path, file_set: FileSet) -> dict[str, Path] | None:
    """``{role: path}`` when ``folder`` holds a file for every role of ``file_set``, else None."""
    found: dict[str, Path] = {}
    for role, names in file_set.items():
        match = next((folder / name for name in names if (folder / name).is_file()), None)
        if match is None:
            return None
        found[role] = match
    return found


def find_folder(search_dirs: Sequence[Path], file_set: FileSet) -> Path | None:
    """The first folder of ``search_dirs`` that holds the whole ``file_set``, else None."""
    return next((folder for folder in search_dirs if files_in(folder, file_set) is not None), None)


def find_file_set(search_dirs: Sequence[Path], file_set: FileSet) -> dict[str, Path] | None:
    """``{role: path}`` from the first folder of ``search_dirs`` that holds the whole set; else None.

    All files of a set must sit in one folder, so a stray test file elsewhere never pairs with
    labels from another copy.
    """
    folder = find_folder(search_dirs, file_set)
    return None if folder is None else files_in(folder, file_set)


def describe_file_set(file_set: FileSet) -> str:
    """Short text for a file set: ``t10k-images-idx3-ubyte[.gz] + t10k-labels-idx1-ubyte[.gz]``,
    or ``cifar-10-batches-py/{data_batch_1, test_batch}`` when every file sits in one subfolder.
    """
    parts = []
    for names in file_set.values():
        first = names[0]
        # Collapse the common "x" / "x.gz" pair into "x[.gz]" to keep the message on one short line.
        if len(names) == 2 and names[1] == first + ".gz":
            parts.append(f"{first}[.gz]")
        else:
            parts.append(" or ".join(names))
    parents = {str(Path(part).parent) for part in parts}
    if len(parts) > 1 and len(parents) == 1 and parents != {"."}:
        return f"{parents.pop()}/{{{', '.join(Path(part).name for part in parts)}}}"
    return " + ".join(parts)


def missing_files_error(
    dataset: str,
    split: str,
    file_sets: Sequence[FileSet],
    search_dirs: Sequence[Path],
    root: Path,
    present_split: str | None = None,
) -> UserError:
    """The error for a built-in dataset whose files are absent: names the files and every folder looked in.

    ``present_split``: another split of the dataset that is there (a data folder with only the test files),
    suggested first.
    """
    expected = " or ".join(f"({describe_file_set(fs)})" if len(file_sets) > 1 else describe_file_set(fs) for fs in file_sets)
    folders = ", ".join(str(d) for d in search_dirs)
    other = f"only its {present_split} split is there: pass {{split}} {present_split}, or " if present_split else ""
    return UserError(
        f"dataset '{dataset}' ({split} split) not found: expected {expected} in one of: {folders}; "
        f"{other}pass {{download}} to fetch it, or set {{param}} or $UNCERT_DATA to the data folder laid out like that "
        f"(the data root now is {root})",
        param="root", mentions=("download", "split") if present_split else ("download",),
    )
