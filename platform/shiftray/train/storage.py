"""The run in ``tracking.storage_path`` (a pyarrow.fs URI or a shared path): Ray Train keeps
the checkpoints in ``<storage_path>/<name>/checkpoint_*``; rank 0 adds the results beside them
(`upload_run_files`); ``--restart`` deletes the lot (`clear_storage`)."""

from __future__ import annotations

from pathlib import Path

from shiftray.config.schema import JobSpec

RUN_FILES = ("result.json", "metrics.jsonl", "spec.yaml", "labels.json")


def _storage_dir(spec: JobSpec):
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(spec.tracking.storage_path)
    return fs, f"{root.rstrip('/')}/{spec.name}"


def upload_run_files(spec: JobSpec, run_dir: Path) -> None:
    """Rank 0 copies the run's results next to its checkpoints in ``tracking.storage_path``
    (``<storage_path>/<name>/result.json``, ``metrics.jsonl``, ...): on a cluster the run
    directory is on rank 0's node, which the driver and the user may never see. One object
    per file (an S3 PUT is whole or absent)."""
    fs, dest = _storage_dir(spec)
    fs.create_dir(dest, recursive=True)
    for name in RUN_FILES:
        src = Path(run_dir) / name
        if src.is_file():
            with fs.open_output_stream(f"{dest}/{name}") as out:
                out.write(src.read_bytes())


def read_run_file(spec: JobSpec, name: str) -> bytes | None:
    """A file `upload_run_files` put in storage, None when it is not there."""
    import pyarrow.fs as pafs

    fs, dest = _storage_dir(spec)
    if fs.get_file_info(f"{dest}/{name}").type != pafs.FileType.File:
        return None
    with fs.open_input_stream(f"{dest}/{name}") as f:
        return f.read()


def clear_storage(spec: JobSpec) -> str | None:
    """Delete the run's checkpoints in ``tracking.storage_path`` (``<storage_path>/<name>``,
    where Ray Train keeps them; a rerun would resume from there): what ``--restart`` means when
    checkpoints live in a bucket. Returns what was deleted, None when there was nothing."""
    uri = spec.tracking.storage_path
    if uri is None:
        return None
    import pyarrow.fs as pafs

    fs, target = _storage_dir(spec)
    if fs.get_file_info(target).type == pafs.FileType.NotFound:
        return None
    fs.delete_dir(target)
    return f"{uri.rstrip('/')}/{spec.name}"
