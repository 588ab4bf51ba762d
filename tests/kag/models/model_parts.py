"""Real small model files for the model cache's tests: GGUF files written with `gguf`, split into
part packages laid out like the PyPI ones (`<module>/data/partNN.bin`), and as real wheels."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import numpy as np

from kag.models.catalog import CatalogModel, ModelPart


def write_gguf(path: Path, *, architecture: str = "qwen2", name: str = "Qwen2.5 Coder 0.5B Instruct AWQ") -> Path:
    """A real GGUF file (header, metadata, one tensor) of a few kilobytes."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_name(name)
    writer.add_tensor("token_embd.weight", np.arange(3000, dtype=np.float32).reshape(30, 100))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def split(data: bytes, pieces: int) -> list[bytes]:
    step = -(-len(data) // pieces)
    return [data[i : i + step] for i in range(0, len(data), step)]


def catalog_model(
    name: str,
    data: bytes,
    *,
    pieces: int = 3,
    prefix: str = "kagtest-part",
    sha256: str | None = None,
    architecture: str = "qwen2",
    name_prefix: str = "Qwen2.5 Coder 0.5B Instruct",
) -> tuple[CatalogModel, list[bytes]]:
    """A catalog entry for `data` split in `pieces` parts, each pinned to its own size and sha256."""
    chunks = split(data, pieces)
    parts = tuple(
        ModelPart(
            package=f"{prefix}{n}",
            version="0.1.0",
            module=f"{prefix}{n}".replace("-", "_"),
            file=f"data/part{n:02d}.bin",
            size=len(chunk),
            sha256=hashlib.sha256(chunk).hexdigest(),
        )
        for n, chunk in enumerate(chunks, start=1)
    )
    model = CatalogModel(
        name=name,
        title=f"{name} test model",
        filename=f"{name}.gguf",
        size=len(data),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        license="Apache-2.0",
        upstream="written by the test",
        parts=parts,
        architecture=architecture,
        name_prefix=name_prefix,
    )
    return model, chunks


def lay_out_parts(site: Path, model: CatalogModel, chunks: list[bytes]) -> None:
    """The part packages as installed folders under `site` (an entry of sys.path); fewer chunks: fewer parts."""
    for part, chunk in zip(model.parts, chunks, strict=False):
        folder = site / part.module
        (folder / "data").mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("raise RuntimeError('kag must locate parts, never import them')\n")
        (folder / part.file).write_bytes(chunk)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheels(folder: Path, model: CatalogModel, chunks: list[bytes]) -> None:
    """Each part as a real wheel in `folder`, for pip to install from there (`--find-links`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, chunk in zip(model.parts, chunks, strict=True):
        dist = f"{part.module}-{part.version}.dist-info"
        files = {
            f"{part.module}/__init__.py": b"",
            f"{part.module}/{part.file}": chunk,
            f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {part.package}\nVersion: {part.version}\n".encode(),
            f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: kag-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        }
        record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in files.items()) + f"{dist}/RECORD,,\n"
        with zipfile.ZipFile(folder / f"{part.module}-{part.version}-py3-none-any.whl", "w") as wheel:
            for path, data in files.items():
                wheel.writestr(path, data)
            wheel.writestr(f"{dist}/RECORD", record)
