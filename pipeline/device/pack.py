"""The bundle container: a plain tar with ``bundle.json`` listing every other member's sha256.

Both sides use it, so it imports only the standard library: ``write_bundle`` on the host,
``open_bundle`` on the board. The tar is deterministic (sorted members, zero mtimes and
owners), so the same run and target give the same bytes and the same bundle sha256.

Checks on opening, each a one-line ``PipelineError`` (exit code 2): not a tar, no or bad
``bundle.json``, another bundle format, an unsafe member (absolute path, ``..``, a link or
device), a file that is also the folder of other members, a member not listed, a listed file
missing, a sha256 that does not match, an artifact or sample path in ``bundle.json`` that is
not one of the hashed members (an absolute path would let the runner load any file on the board).
The hashes catch corruption and edits of the payload; they cannot catch someone who also
rewrites ``bundle.json``, so compare the bundle's own sha256 (printed by ``bundle``) when
the copy crossed an untrusted channel.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from pipeline.artifacts import atomic_write_bytes
from pipeline.device import BUNDLE_FORMAT
from pipeline.errors import PipelineError, one_line
from pipeline.fs import not_an_input

MANIFEST_NAME = "bundle.json"
MAX_MANIFEST_BYTES = 1 << 20  # bundle.json: a few KiB of settings, hashes and host predictions
MAX_MEMBER_BYTES = 1 << 30  # one bundled file: an edge model or the sample is far smaller; more is not a bundle we made
_CHUNK = 1 << 20


def _sha256_stream(fileobj, out=None, limit: int | None = None) -> str:
    """sha256 of ``fileobj`` read in chunks (copied to ``out`` if given); past ``limit`` bytes, OverflowError: a member
    whose header lies about its size is never read whole into memory."""
    h, n = hashlib.sha256(), 0
    while block := fileobj.read(_CHUNK):
        n += len(block)
        if limit is not None and n > limit:
            raise OverflowError(n)
        h.update(block)
        if out is not None:
            out.write(block)
    return h.hexdigest()


def sha256_path(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256_stream(f)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_bundle(output: Path, files: dict[str, Path], manifest: dict) -> str:
    """Write ``files`` (member name → local file) and ``manifest`` + their hashes; return the tar's sha256."""
    output = Path(output)
    not_an_input(output, files.values())
    for name in files:
        _check_member_name(output, name)
    payload = {name: Path(path).read_bytes() for name, path in sorted(files.items())}
    manifest = {**manifest, "format": BUNDLE_FORMAT,
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in payload.items()}}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
        for name, data in payload.items():
            _add(tar, name, data)
    atomic_write_bytes(output, buf.getvalue())  # the payload is in memory already; readers never see half a tar
    return hashlib.sha256(buf.getvalue()).hexdigest()


def _check_member_name(bundle: Path, name: str) -> None:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or name != str(p):
        raise PipelineError(f"{bundle}: unsafe member name {name!r} in bundle; refusing to open it")


def open_bundle(path: Path, dest: Path) -> dict:
    """Verify every member against ``bundle.json`` and extract into ``dest``; return the manifest.

    ``bundle.json`` comes first (``write_bundle`` puts it there) and is read whole (≤ ``MAX_MANIFEST_BYTES``); every
    other member must be listed in it, which is checked from its header before any byte of it is read, and is
    streamed to a staging folder beside ``dest`` while hashed (≤ ``MAX_MEMBER_BYTES``). Nothing is written to
    ``dest`` unless the whole bundle verifies.
    """
    path, dest = Path(path), Path(dest)
    if not path.is_file():
        raise PipelineError(f"{path}: no such bundle file (make one with: python -m pipeline bundle RUN --target T -o {path.name})")
    try:
        tar = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError) as exc:  # tarfile lists every compression it tried, one per line
        raise PipelineError(f"{path}: not a bundle tar ({one_line(str(exc).splitlines()[-1].lstrip('- '), 120)})") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        with tar:
            manifest, digests = _verified_members(path, tar, staging)
        for name in digests:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, target)
        (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _verified_members(path: Path, tar: tarfile.TarFile, staging: Path) -> tuple[dict, dict[str, str]]:
    """The manifest and {member: sha256} of every member streamed into ``staging``, all checked against the manifest."""
    manifest, digests = None, {}
    try:
        for info in tar:
            _check_member_name(path, info.name)
            if not info.isfile():
                raise PipelineError(f"{path}: member {info.name!r} is not a regular file; refusing to open the bundle")
            if manifest is None:
                if info.name != MANIFEST_NAME or info.size > MAX_MANIFEST_BYTES:
                    raise PipelineError(f"{path}: no {MANIFEST_NAME} inside as its first member (of at most "
                                        f"{MAX_MANIFEST_BYTES >> 10} KiB); not a bundle made by python -m pipeline bundle")
                manifest = _read_manifest(path, tar.extractfile(info).read())
                _check_layout(path, manifest["files"])
                continue
            if info.name not in manifest["files"]:
                raise PipelineError(f"{path}: {info.name} is not listed in {MANIFEST_NAME} (bundle modified); rebuild it with "
                                    "python -m pipeline bundle")
            if info.name in digests:
                raise PipelineError(f"{path}: member {info.name!r} appears twice; refusing to open the bundle")
            if info.size > MAX_MEMBER_BYTES:
                raise PipelineError(f"{path}: member {info.name} is {info.size / 2**30:.1f} GiB, more than the "
                                    f"{MAX_MEMBER_BYTES >> 30} GiB a bundled file may be; not a bundle made by python -m pipeline bundle")
            target = staging / info.name
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                digests[info.name] = _sha256_stream(tar.extractfile(info), out, limit=info.size)
    except (tarfile.TarError, OSError, EOFError, OverflowError) as exc:
        raise PipelineError(f"{path}: truncated or corrupt bundle tar ({one_line(exc, 120)})") from None
    if manifest is None:
        raise PipelineError(f"{path}: no {MANIFEST_NAME} inside; not a bundle made by python -m pipeline bundle")
    listed = manifest["files"]
    for name in sorted(listed):
        if name not in digests:
            raise PipelineError(f"{path}: {name} listed in {MANIFEST_NAME} is missing (bundle modified or truncated); rebuild it")
        if digests[name] != listed[name]:
            raise PipelineError(f"{path}: sha256 mismatch for {name} (bundle modified or corrupted); rebuild it with python -m pipeline bundle")
    return manifest, digests


def _check_layout(path: Path, files: dict) -> None:
    """Member names that can all be written: safe, and none both a file and the folder of another."""
    for name in files:
        _check_member_name(path, name)
    folders = {str(parent) for name in files for parent in PurePosixPath(name).parents if str(parent) != "."}
    clash = sorted(folders & set(files))
    if clash:
        raise PipelineError(f"{path}: member {clash[0]!r} is both a file and the folder of other members; refusing to open the bundle")


def _read_manifest(path: Path, data: bytes | None) -> dict:
    if data is None:
        raise PipelineError(f"{path}: no {MANIFEST_NAME} inside; not a bundle made by python -m pipeline bundle")
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise PipelineError(f"{path}: {MANIFEST_NAME} is not valid JSON ({exc}); rebuild the bundle") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise PipelineError(f"{path}: {MANIFEST_NAME} has no 'files' table; rebuild the bundle")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise PipelineError(
            f"{path}: bundle format {manifest.get('format')!r}, this runner reads format {BUNDLE_FORMAT}; "
            "rebuild the bundle or update the runner to the same pipeline version"
        )
    for where, member in _referenced_paths(manifest):
        if not isinstance(member, str) or member not in manifest["files"] or member == MANIFEST_NAME:
            raise PipelineError(f"{path}: {MANIFEST_NAME} {where} {member!r} is not a hashed file of this bundle "
                                "(absolute and '..' paths are refused); rebuild it with python -m pipeline bundle")
    return manifest


def _referenced_paths(manifest: dict):
    """(where, path) for every file ``bundle.json`` tells the runner to open: the sample, each artifact and sidecar."""
    sample, artifacts = manifest.get("sample", {}), manifest.get("artifacts", {})
    if not isinstance(sample, dict) or not isinstance(artifacts, dict):
        yield "sample/artifacts", None
        return
    if sample:
        yield "sample.path", sample.get("path")
    for key, art in artifacts.items():
        if not isinstance(art, dict):
            yield f"artifacts.{key}", None
            continue
        yield f"artifacts.{key}.path", art.get("path")
        if art.get("sidecar") is not None:
            yield f"artifacts.{key}.sidecar", art["sidecar"]
