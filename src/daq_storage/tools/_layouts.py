"""How each format lays a file out, read with the format's own library: HDF5 groups and
datasets (h5py), Zarr groups and arrays (zarr), Parquet schema and row groups
(pyarrow.parquet), Arrow IPC schema and batches, CSV columns and rows, TIFF pages
(tifffile)."""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from daq_storage.schema import decode_metadata
from daq_storage.tools._node import Node, human_bytes, plain

__all__ = ["LAYOUTS", "arrow_layout", "json_layout", "layout_of", "parquet_layout", "size_of",
           "zarr_layout"]  # fmt: skip

#: Arrow metadata keys that repeat the schema (pyarrow's own): not shown.
_ARROW_OWN = (b"ARROW:schema",)


def size_of(path: Path) -> int:
    """Bytes on disk of a file, or of every file under a directory."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _ratio(raw: int, stored: int) -> float | None:
    return float(f"{raw / stored:.3g}") if raw > 0 and stored > 0 else None


def _times(ratio: float | None) -> str | None:
    """A compression ratio as shown: raw bytes over stored bytes."""
    return None if ratio is None else f"{ratio:g}x"


def _join(*parts: str | None) -> str:
    return " · ".join(p for p in parts if p)


def _shape(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(n) for n in shape) if len(shape) else "scalar"


# --------------------------------------------------------------------------- HDF5
def _hdf5(path: Path) -> Node:
    import h5py

    node = Node(path.name, "file", facts={"format": "hdf5", "bytes": size_of(path)})
    with h5py.File(path, "r", locking=False) as f:
        node.facts["attributes"] = _attrs(f.attrs)
        node.facts["libver"] = [str(v) for v in f.libver]
        _hdf5_group(f, node)
    node.summary = _join(
        "HDF5 file", human_bytes(node.facts["bytes"]), f"{len(node.children)} top-level objects"
    )
    return node


def _attrs(attrs: Any) -> dict[str, Any]:
    out = {}
    for key in attrs:
        try:
            value = attrs[key]
        except (OSError, TypeError) as exc:  # a type h5py cannot read back
            value = f"<unreadable: {exc}>"
        if isinstance(value, bytes):
            value = value.decode("utf-8", "backslashreplace")
        if isinstance(value, str) and value[:1] in ("[", "{"):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        out[str(key)] = plain(value)
    return out


def _hdf5_group(group: Any, node: Node) -> None:
    import h5py

    for name in group:
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.SoftLink | h5py.ExternalLink):
            target = (
                link.path if isinstance(link, h5py.SoftLink) else f"{link.filename}:{link.path}"
            )
            node.add(Node(name, "link", f"→ {target}", {"target": target}))
            continue
        item = group[name]
        if isinstance(item, h5py.Group):
            child = node.add(Node(name, "group", facts={"attributes": _attrs(item.attrs)}))
            _hdf5_group(item, child)
            child.summary = _join("group", f"{len(child.children)} members")
        else:
            node.add(_hdf5_dataset(name, item))


def _hdf5_dataset(name: str, dataset: Any) -> Node:
    import h5py

    facts: dict[str, Any] = {"shape": list(dataset.shape), "attributes": _attrs(dataset.attrs)}
    text = h5py.check_string_dtype(dataset.dtype)
    facts["dtype"] = f"string ({text.encoding})" if text is not None else str(dataset.dtype)
    facts["chunks"] = list(dataset.chunks) if dataset.chunks else None
    plist = dataset.id.get_create_plist()
    filters = []
    for i in range(plist.get_nfilters()):
        code, _, values, label = plist.get_filter(i)
        filters.append(
            {
                "id": int(code),
                "name": label.decode("utf-8", "replace") or str(code),
                "options": [int(v) for v in values],
            }
        )
    facts["filters"] = filters
    codecs = [f["name"] for f in filters if f["name"] not in ("shuffle", "fletcher32")]
    facts["compression"] = dataset.compression or (codecs[0] if codecs else None)
    facts["compression_opts"] = plain(dataset.compression_opts)
    stored = int(dataset.id.get_storage_size())
    facts["stored_bytes"] = stored
    variable = text is not None or dataset.dtype.kind == "O"
    raw = 0 if variable else int(dataset.size) * dataset.dtype.itemsize
    facts["raw_bytes"] = raw or None
    facts["ratio"] = _ratio(raw, stored)
    facts["unfiltered_chunks"] = _unfiltered(dataset) if filters and dataset.chunks else 0
    codec = facts["compression"]
    if codec == "gzip" and facts["compression_opts"] is not None:
        codec = f"gzip({facts['compression_opts']})"
    summary = _join(
        _shape(dataset.shape),
        facts["dtype"],
        f"chunks {_shape(dataset.chunks)}" if dataset.chunks else "contiguous",
        codec,
        _times(facts["ratio"]),
        f"{facts['unfiltered_chunks']} chunk{'s' * (facts['unfiltered_chunks'] > 1)} "
        "stored unfiltered"
        if facts["unfiltered_chunks"]
        else None,
    )
    return Node(name, "dataset", summary, facts)


def _unfiltered(dataset: Any) -> int:
    """Chunks stored without the dataset's filters (HDF5 marks each in its filter mask:
    a chunk written raw, not compressed)."""
    count = 0

    def seen(info: Any) -> None:
        nonlocal count
        count += info.filter_mask != 0

    try:
        dataset.id.chunk_iter(seen)
    except (AttributeError, RuntimeError, OSError):  # an HDF5 library without H5Dchunk_iter
        return 0
    return count


# --------------------------------------------------------------------------- Zarr
def _zarr(path: Path) -> Node:
    import zarr

    return zarr_layout(path.name, size_of(path), zarr.open_group(str(path), mode="r"))


def zarr_layout(name: str, size: int, group: Any) -> Node:
    """The layout of the Zarr store whose root group is ``group`` (``size`` bytes)."""
    node = Node(
        name,
        "file",
        facts={
            "format": "zarr",
            "bytes": size,
            "attributes": plain(dict(group.attrs)),
            "zarr_format": group.metadata.zarr_format,
        },
    )
    _zarr_group(group, node)
    node.summary = _join(
        f"Zarr v{group.metadata.zarr_format} store",
        human_bytes(node.facts["bytes"]),
        f"{len(node.children)} members",
    )
    return node


def _zarr_group(group: Any, node: Node) -> None:
    import zarr

    for name, member in sorted(group.members(), key=lambda m: m[0]):
        if isinstance(member, zarr.Group):
            child = node.add(Node(name, "group", facts={"attributes": plain(dict(member.attrs))}))
            _zarr_group(member, child)
            child.summary = _join("group", f"{len(child.children)} members")
        else:
            node.add(_zarr_array(name, member))


def _codec_name(codec: Any) -> str:
    """A Zarr codec as shown: ``zstd``, ``blosc(lz4)``."""
    if not isinstance(codec, dict):
        return str(codec)
    name = str(codec.get("name", "?"))
    inner = (codec.get("configuration") or {}).get("cname")
    return f"{name}({inner})" if inner else name


def _zarr_array(name: str, array: Any) -> Node:
    metadata = array.metadata
    codecs = [c.to_dict() for c in getattr(metadata, "codecs", ())]
    names = [_codec_name(c) for c in codecs]
    stored = int(array.nbytes_stored())
    raw = int(array.nbytes) if array.dtype.kind not in "OTU" else 0
    dims = getattr(metadata, "dimension_names", None)
    dtype = "string" if array.dtype.kind in "OTU" else str(array.dtype)
    facts = {
        "shape": list(array.shape),
        "dtype": dtype,
        "chunks": list(array.chunks),
        "shards": list(array.shards) if array.shards else None,
        "dimension_names": list(dims) if dims else None,
        "codecs": plain(codecs),
        "stored_bytes": stored,
        "raw_bytes": raw or None,
        "ratio": _ratio(raw, stored),
        "attributes": plain(dict(array.attrs)),
    }
    main = [n for n in names if n not in ("bytes", "vlen-utf8", "vlen-bytes", "transpose")]
    summary = _join(
        f"[{', '.join(dims)}]" if dims else None,
        _shape(array.shape),
        dtype,
        f"chunks {_shape(array.chunks)}",
        "+".join(main) or None,
        _times(facts["ratio"]),
    )
    return Node(name, "array", summary, facts)


# ------------------------------------------------------------------------ Parquet
def _metadata(raw: Mapping[bytes, bytes] | None) -> dict[str, Any]:
    kept = {k: v for k, v in (raw or {}).items() if k not in _ARROW_OWN}
    return plain(decode_metadata(kept))  # type: ignore[no-any-return]


def _fields(schema: pa.Schema) -> list[Node]:
    return [
        Node(
            f.name,
            "column",
            _join(str(f.type), None if f.nullable else "not null"),
            {"type": str(f.type), "nullable": f.nullable, "attributes": _metadata(f.metadata)},
        )
        for f in schema
    ]


def _parquet(path: Path) -> Node:
    return parquet_layout(path.name, size_of(path), path)


def parquet_layout(name: str, size: int, source: Any) -> Node:
    """The layout of a Parquet file (``size`` bytes) read from ``source`` (a path or an
    open file: only its footer is read)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(source) as parquet:
        md = parquet.metadata
        schema = parquet.schema_arrow
        groups = [md.row_group(i) for i in range(md.num_row_groups)]
        columns = _fields(schema)
        leaf_names = [md.schema.column(i).path for i in range(md.num_columns)]
        for column in columns:
            leaves = [
                i
                for i, name in enumerate(leaf_names)
                if name == column.name or name.startswith(column.name + ".")
            ]
            packed = sum(g.column(i).total_compressed_size for g in groups for i in leaves)
            unpacked = sum(g.column(i).total_uncompressed_size for g in groups for i in leaves)
            codecs = sorted({g.column(i).compression for g in groups for i in leaves})
            column.facts.update(
                compression=codecs,
                stored_bytes=packed,
                raw_bytes=unpacked,
                ratio=_ratio(unpacked, packed),
            )
            column.summary = _join(
                column.summary, "/".join(codecs) or None, _times(column.facts["ratio"])
            )
        node = Node(
            name,
            "file",
            facts={
                "format": "parquet",
                "bytes": size,
                "rows": md.num_rows,
                "row_groups": md.num_row_groups,
                "row_group_rows": [g.num_rows for g in groups],
                "created_by": md.created_by,
                "format_version": md.format_version,
                "attributes": _metadata(schema.metadata),
            },
        )
    node.children = columns
    node.summary = _join(
        "Parquet file",
        human_bytes(node.facts["bytes"]),
        f"{md.num_rows:,} rows",
        f"{md.num_row_groups} row groups",
        f"{len(columns)} columns",
    )
    return node


# ---------------------------------------------------------------------- Arrow IPC
def _arrow(path: Path) -> Node:
    with pa.memory_map(str(path)) as source:
        return arrow_layout(path.name, size_of(path), source)


def arrow_layout(name: str, size: int, source: pa.NativeFile) -> Node:
    """The layout of an Arrow IPC file or stream (``size`` bytes) read from ``source``."""
    head = source.read(6)
    source.seek(0)
    batches = rows = 0
    custom: dict[bytes, bytes] = {}
    if head == b"ARROW1":
        reader = pa.ipc.open_file(source)
        schema = reader.schema
        for i in range(reader.num_record_batches):
            batch, extra = reader.get_batch_with_custom_metadata(i)
            batches, rows = batches + 1, rows + batch.num_rows
            custom.update(extra or {})
        kind = "file format"
    else:
        stream = pa.ipc.open_stream(source)
        schema = stream.schema
        while True:
            try:
                batch, extra = stream.read_next_batch_with_custom_metadata()
            except StopIteration:
                break
            batches, rows = batches + 1, rows + batch.num_rows
            custom.update(extra or {})
        kind = "streaming format"
    columns = _fields(schema)
    node = Node(
        name,
        "file",
        facts={
            "format": "arrow",
            "bytes": size,
            "ipc": kind,
            "rows": rows,
            "batches": batches,
            "attributes": _metadata(schema.metadata),
            "batch_metadata": _metadata(custom),
        },
        children=columns,
    )
    node.summary = _join(
        f"Arrow IPC file ({kind})",
        human_bytes(node.facts["bytes"]),
        f"{rows:,} rows",
        f"{batches} batches",
        f"{len(columns)} columns",
    )
    return node


# ---------------------------------------------------------------------------- CSV
def _csv(path: Path) -> Node:
    with path.open(newline="", encoding="utf-8") as text:
        rows = csv.reader(text)
        header = next(rows, [])
        count = sum(1 for _ in rows)
    node = Node(
        path.name,
        "file",
        facts={"format": "csv", "bytes": size_of(path), "rows": count, "columns": header},
        children=[Node(name, "column") for name in header],
    )
    node.summary = _join(
        "CSV file", human_bytes(node.facts["bytes"]), f"{count:,} rows", f"{len(header)} columns"
    )
    return node


def _json(path: Path) -> Node:
    return json_layout(path.name, path.read_bytes())


def json_layout(name: str, data: bytes) -> Node:
    """A JSON document's keys and content."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        return Node(name, "file", "JSON file", {"format": "json"}, problem=f"not JSON: {exc}")
    keys = list(document) if isinstance(document, dict) else []
    return Node(
        name,
        "file",
        _join("JSON file", f"keys {', '.join(keys)}" if keys else None),
        {"format": "json", "bytes": len(data), "content": plain(document)},
    )


# --------------------------------------------------------------------------- TIFF
def _tiff(path: Path) -> Node:
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        pages = len(tiff.pages)
        first = tiff.pages.first
        description = getattr(first, "description", "") or ""
        try:
            described: Any = json.loads(description)
        except ValueError:
            described = description[:2000]
        facts = {
            "format": "tiff",
            "bytes": size_of(path),
            "pages": pages,
            "page_shape": list(first.shape),
            "dtype": str(first.dtype),
            "compression": str(getattr(first.compression, "name", first.compression)).lower(),
            "bigtiff": tiff.is_bigtiff,
            "imagej": tiff.is_imagej,
            "series": [
                {"shape": list(s.shape), "dtype": str(s.dtype), "axes": s.axes} for s in tiff.series
            ],
            "description": described,
            "attributes": plain(
                tiff.shaped_metadata[0] if tiff.shaped_metadata else tiff.imagej_metadata or {}
            ),
        }
    node = Node(path.name, "file", facts=facts)
    node.summary = _join(
        "BigTIFF file" if facts["bigtiff"] else "TIFF file",
        human_bytes(facts["bytes"]),
        f"{pages:,} pages",
        _shape(facts["page_shape"]),
        facts["dtype"],
        facts["compression"],
    )
    return node


#: Suffix -> the function laying out a file (or Zarr store) of that format.
LAYOUTS: dict[str, Callable[[Path], Node]] = {
    ".h5": _hdf5,
    ".hdf5": _hdf5,
    ".he5": _hdf5,
    ".zarr": _zarr,
    ".parquet": _parquet,
    ".arrows": _arrow,
    ".arrow": _arrow,
    ".csv": _csv,
    ".tif": _tiff,
    ".tiff": _tiff,
    ".json": _json,
}


def layout_of(path: Path) -> Node:
    """The layout of one file (or Zarr store) of a format this project writes; any other
    file is a node with its size only. A file its library cannot read is a node with a
    ``problem``."""
    suffix = path.suffix.lower()
    if path.is_dir() and (path / "zarr.json").is_file():
        suffix = ".zarr"
    layout = LAYOUTS.get(suffix)
    if layout is None:
        size = size_of(path) if path.exists() else 0
        return Node(path.name, "file", human_bytes(size), {"bytes": size})
    try:
        return layout(path)
    except Exception as exc:  # any library's failure is this file's verdict, not the tree's
        return Node(
            path.name,
            "file",
            facts={"format": suffix.lstrip("."), "bytes": size_of(path)},
            problem=f"{type(exc).__name__}: {exc}",
        )
