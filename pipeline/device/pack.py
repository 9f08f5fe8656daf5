"""The bundle container: a plain tar with ``bundle.json`` listing every other member's sha256.

Both sides use it, so it imports only the standard library: ``write_bundle`` on the host,
``open_bundle`` on the board. The tar is deterministic (sorted members, zero mtimes and
owners), so the same run and target give the same bytes and the same bundle sha256.

Checks on opening, each a one-line ``PipelineError`` (exit code 2): not a tar, no or bad
``bundle.json``, another bundle format, an unsafe member (absolute path, ``..``, a link or
device), a member not listed, a listed file missing, a sha256 that does not match.
The hashes catch corruption and edits of the payload; they cannot catch someone who also
rewrites ``bundle.json``, so compare the bundle's own sha256 (printed by ``bundle``) when
the copy crossed an untrusted channel.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from pipeline.device import BUNDLE_FORMAT
from pipeline.errors import PipelineError

MANIFEST_NAME = "bundle.json"
_CHUNK = 1 << 20


def _sha256_bytes_of(fileobj) -> tuple[str, bytes]:
    h, parts = hashlib.sha256(), []
    while block := fileobj.read(_CHUNK):
        h.update(block)
        parts.append(block)
    return h.hexdigest(), b"".join(parts)


def sha256_path(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256_bytes_of(f)[0]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_bundle(output: Path, files: dict[str, Path], manifest: dict) -> str:
    """Write ``files`` (member name → local file) and ``manifest`` + their hashes; return the tar's sha256."""
    output = Path(output)
    for name in files:
        _check_member_name(output, name)
    payload = {name: Path(path).read_bytes() for name, path in sorted(files.items())}
    manifest = {**manifest, "format": BUNDLE_FORMAT,
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in payload.items()}}
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
            for name, data in payload.items():
                _add(tar, name, data)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_path(output)


def _check_member_name(bundle: Path, name: str) -> None:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or name != str(p):
        raise PipelineError(f"{bundle}: unsafe member name {name!r} in bundle; refusing to open it")


def open_bundle(path: Path, dest: Path) -> dict:
    """Verify every member against ``bundle.json`` and extract into ``dest``; return the manifest.

    Nothing is written to ``dest`` unless the whole bundle verifies.
    """
    path, dest = Path(path), Path(dest)
    if not path.is_file():
        raise PipelineError(f"{path}: no such bundle file (make one with: python -m pipeline bundle RUN --target T -o {path.name})")
    try:
        tar = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise PipelineError(f"{path}: not a bundle tar ({exc})") from None
    with tar:
        members: dict[str, bytes] = {}
        digests: dict[str, str] = {}
        try:
            for info in tar:
                _check_member_name(path, info.name)
                if not info.isfile():
                    raise PipelineError(f"{path}: member {info.name!r} is not a regular file; refusing to open the bundle")
                if info.name in members:
                    raise PipelineError(f"{path}: member {info.name!r} appears twice; refusing to open the bundle")
                digests[info.name], members[info.name] = _sha256_bytes_of(tar.extractfile(info))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise PipelineError(f"{path}: truncated or corrupt bundle tar ({exc})") from None
    manifest = _read_manifest(path, members.pop(MANIFEST_NAME, None))
    digests.pop(MANIFEST_NAME, None)
    listed = manifest["files"]
    for name in sorted(set(digests) | set(listed)):
        if name not in listed:
            raise PipelineError(f"{path}: {name} is not listed in {MANIFEST_NAME} (bundle modified); rebuild it with python -m pipeline bundle")
        if name not in digests:
            raise PipelineError(f"{path}: {name} listed in {MANIFEST_NAME} is missing (bundle modified or truncated); rebuild it")
        if digests[name] != listed[name]:
            raise PipelineError(f"{path}: sha256 mismatch for {name} (bundle modified or corrupted); rebuild it with python -m pipeline bundle")
    for name, data in members.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


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
    return manifest
