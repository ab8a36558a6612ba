"""Atomic writes, crash recovery and fault injection: one module shared by every part.

A crashed run never leaves a half-written result file. Everything goes to a temporary file (or folder)
beside the target and is moved into place with ``os.replace``, which is atomic on POSIX. Files get the usual
permissions (0666 masked by the umask), not mkstemp's private 0600.

Replacing a *folder* needs two renames (old out of the way, new in). A kill between them leaves no target
but a complete ``.NAME.old.PID``; :func:`recover_folder` puts it back and removes abandoned temp folders,
so the reader always finds a complete (possibly one write older) folder.

Fault injection: every atomic write passes named points (``NAME:files`` once the temporary is written,
``NAME:swap`` between a folder's two renames). :func:`fault_point` crashes there when asked, either through
the environment (``HYBRID_FAULT=NAME:files`` or ``NAME:files@3`` for the third hit: the process SIGKILLs
itself, a real crash) or through :func:`set_fault_hook` (tests). A :class:`SimulatedCrash` skips the
cleanup code, so it leaves what a kill leaves.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

FAULT_ENV = "HYBRID_FAULT"


class SimulatedCrash(BaseException):
    """Raised by a fault hook to stand for a kill: cleanup handlers let it through untouched."""


_fault_hook: Callable[[str], None] | None = None
_fault_hits: dict[str, int] = {}


def set_fault_hook(hook: Callable[[str], None] | None) -> None:
    """Call ``hook(point)`` at every named write point (None: off). Tests record or crash with it."""
    global _fault_hook
    _fault_hook = hook


def fault_point(point: str) -> None:
    """A named write point: crash here if the hook or ``HYBRID_FAULT`` asks for it."""
    if _fault_hook is not None:
        _fault_hook(point)
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition("@")
    if name != point:
        return
    _fault_hits[point] = _fault_hits.get(point, 0) + 1
    if _fault_hits[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cleanup(exc: BaseException) -> bool:
    return not isinstance(exc, SimulatedCrash)


def _mkdir_parent(path: Path) -> None:
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise NotADirectoryError(f"{str(parent)!r} is a file, not a folder")
    parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on normal exit it replaces ``path``, on error it is removed.

    For writers that want a file name (``savefig``, ``save_pretrained`` of one file, ...).
    """
    path = Path(path)
    _mkdir_parent(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        fault_point(f"{path.name}:files")
        os.replace(tmp, path)
    except BaseException as exc:
        if _cleanup(exc) and os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, data, **dumps_kwargs) -> None:
    """Write ``data`` as indented JSON atomically (``dumps_kwargs`` go to ``json.dumps``)."""
    atomic_write_text(path, json.dumps(data, **{"indent": 2, **dumps_kwargs}) + "\n")


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (the old one is removed)."""
    path = Path(path)
    _mkdir_parent(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp."))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        fault_point(f"{path.name}:files")
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
            fault_point(f"{path.name}:swap")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        if _cleanup(exc):
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_folder(path: str | os.PathLike) -> bool:
    """Undo a write of :func:`atomic_folder` that a crash cut short; True if something was put back.

    A missing ``path`` beside a ``.NAME.old.*`` (the crash came between the two renames) gets the old,
    complete folder back; abandoned temporaries (``.NAME.tmp.*``, stale ``.NAME.old.*``) are removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return False
    olds = sorted(path.parent.glob(f".{path.name}.old.*"), key=lambda p: p.stat().st_mtime)
    restored = False
    if not path.exists() and olds:
        os.replace(olds.pop(), path)
        restored = True
    for stale in [*olds, *path.parent.glob(f".{path.name}.tmp.*")]:
        shutil.rmtree(stale, ignore_errors=True)
    return restored


def is_temporary(name: str) -> bool:
    """A name :func:`atomic_path` or :func:`atomic_folder` uses for its temporaries."""
    return name.startswith(".") and (name.endswith(".tmp") or ".tmp." in name or ".old." in name)


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Remove temp files of :func:`atomic_path` left in ``folder`` by a crash (``.NAME.*.tmp``)."""
    for stale in Path(folder).glob(".*.tmp"):
        if stale.is_file():
            stale.unlink()


def link_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` hold the files of ``src``: hard links where the file system allows, copies otherwise.

    Safe for folders written by :func:`atomic_folder`, whose files are never changed in place.
    """
    src, dst = Path(src), Path(dst)
    for item in src.rglob("*"):
        target = dst / item.relative_to(src)
        if item.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(item, target)
        except OSError:
            shutil.copy2(item, target)


# ---------------------------------------------------------------------- per-cell result cache
_active_cells = None  # the CellCache of the innermost `with CellCache(...)`


class CellCache:
    """Finished cells of a long computation, one JSON file each (written atomically), keyed by their inputs.

    A killed figure, sweep or measurement re-run with the same cache recomputes only the cells that had
    not finished. ``computed`` and ``reused`` count what happened (for logs and tests).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.computed = 0
        self.reused = 0

    def path(self, key: dict) -> Path:
        import hashlib
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=repr).encode()).hexdigest()[:16]
        return self.folder / f"{digest}.json"

    def get_or_compute(self, key: dict, compute: Callable[[], dict]) -> dict:
        path = self.path(key)
        if path.exists():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                if stored.get("key") == json.loads(json.dumps(key, sort_keys=True, default=repr)):
                    self.reused += 1
                    return stored["value"]
            except (OSError, ValueError):
                pass  # unreadable: compute it again
        value = compute()
        atomic_write_json(path, {"key": key, "value": value}, sort_keys=True, default=repr)
        self.computed += 1
        fault_point("cell:written")
        return value

    def __enter__(self) -> "CellCache":
        global _active_cells
        self._outer, _active_cells = _active_cells, self
        return self

    def __exit__(self, *exc) -> None:
        global _active_cells
        _active_cells = self._outer


def cached_cell(key: dict, compute: Callable[[], dict]) -> dict:
    """``compute()`` through the active :class:`CellCache` (``with CellCache(folder): ...``), if any.

    ``compute`` must return JSON data (floats round-trip exactly)."""
    if _active_cells is None:
        return json.loads(json.dumps(compute(), default=repr))  # the same types with or without a cache
    return _active_cells.get_or_compute(key, compute)
