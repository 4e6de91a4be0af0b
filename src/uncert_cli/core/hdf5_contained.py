"""HDF5 files that hold their own data: the check every HDF5 input (factor file, data file) passes.

An HDF5 file can make its reader open other files: an external link (``h5py.ExternalLink``) stands for
an object in another file, a dataset with external storage keeps its bytes in raw files named in its
header, and a virtual dataset is assembled from datasets of other files. uncert writes none of these,
and reading one would open files the user never named: ``/etc/passwd`` read as weights or pixels,
``/dev/zero`` that never ends, a named pipe that blocks forever. Such a file is refused before any
of its arrays is read. Soft links stay inside the file and are allowed.
"""

from __future__ import annotations

from typing import Any

_SHOWN = 80  # characters of a file-chosen name quoted in a message


def _quoted(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return repr(text[:_SHOWN])


def outside_reference(h5: Any) -> str | None:
    """How the open ``h5py.File`` ``h5`` reaches outside itself (e.g. "/x is a link to ... in
    another file"), or None when it holds all of its data. Reads link and dataset headers only.
    """
    import h5py  # lazy: the CLI's start-up does not need it

    def problem(name: str, link: Any) -> str | None:
        where = _quoted("/" + name)
        if isinstance(link, h5py.ExternalLink):
            return f"{where} is a link to {_quoted(link.path)} in another file, {_quoted(link.filename)}"
        if not isinstance(link, h5py.HardLink):
            return None  # a soft link names a path inside this file
        dataset = h5.get(name)
        if not isinstance(dataset, h5py.Dataset):
            return None
        plist = dataset.id.get_create_plist()
        if plist.get_layout() == h5py.h5d.VIRTUAL:
            return f"{where} is a virtual dataset, which reads other datasets, in other files too"
        if plist.get_external_count() > 0:
            return f"{where} keeps its data in another file, {_quoted(plist.get_external(0)[0])}"
        return None

    # H5Lvisit: every link once, hard-linked groups entered once (no loop), other links not followed.
    found: str | None = h5.visititems_links(problem)
    return found
