"""Running .mlpackage files: `CoreMLRunner` (coremltools; it predicts on macOS only, which the plug-in's
`available()` reports) and the reader of `user_defined_metadata["dbd"]` in the package's model spec
(`metadata_entry`, with the standard library alone: protowire).

coremltools is imported inside the runner: this module is loaded whenever formats are looked up
(dbd.runtime.engines).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dbd.core import DBDError
from dbd.runtime import protowire
from dbd.runtime.metadata import METADATA_KEY
from dbd.runtime.runners import ExportedRunner


class CoreMLRunner(ExportedRunner):
    format = "coreml"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu"):
        super().__init__(path)
        import coremltools as ct

        self.model = ct.models.MLModel(str(path))
        self.input_name, self.output_name = self.info["input"]["name"], self.info["output"]["name"]

    def run_one(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - macOS only
        return self.model.predict({self.input_name: x})[self.output_name]


def metadata_entry(path: Path) -> str | None:
    """`user_defined_metadata["dbd"]` of the .mlpackage folder's model spec (None when absent)."""
    manifest_path = path / "Manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        root = manifest["rootModelIdentifier"]
        spec_path = path / "Data" / manifest["itemInfoEntries"][root]["path"]
        spec = spec_path.read_bytes()
    except (OSError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DBDError(
            f"'{path}' is not a readable .mlpackage (Manifest.json or model spec: {type(err).__name__}); "
            f"re-export it with dbd-export"
        ) from None
    try:
        # Model: description = 2; ModelDescription: metadata = 100; Metadata: userDefined = 100 (map).
        found = None
        for description in protowire.submessages(spec, 2):
            for metadata in protowire.submessages(description, 100):
                for entry in protowire.submessages(metadata, 100):
                    key, value = protowire.string_map_entry(entry)
                    if key == METADATA_KEY:
                        found = value
        return found
    except (ValueError, UnicodeDecodeError) as err:
        raise DBDError(f"'{path}' holds a corrupt CoreML model spec ({err}); re-export it with dbd-export") from None
