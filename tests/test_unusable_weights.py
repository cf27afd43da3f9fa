"""Class 3 of the hostile-input review: weights that load but are not usable — NaN weights
(refused with the damaged-file cases, tests/test_damaged_files.py), shipped files that changed,
and NaN printed as if it were JSON."""

from __future__ import annotations

import json
import math

import pytest

from bayes_smlm.cli.arguments import json_text
from bayes_smlm.errors import ConfigError
from bayes_smlm.surrogates import checkpoint as checkpoints
from bayes_smlm.surrogates.phi.estimator import load_phi


def test_a_changed_shipped_checkpoint_is_refused(tmp_path, monkeypatch, isolated):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("0" * 64 + "  phi-isolated/model.safetensors\n")
    monkeypatch.setattr(checkpoints, "SHIPPED_SUMS", sums)
    with pytest.raises(ConfigError, match="phi-isolated/model.safetensors .*released SHA-256"):
        load_phi(None, isolated)


def test_every_shipped_weights_file_is_recorded_and_matches():
    recorded = {
        name: digest
        for digest, name in (
            line.split(maxsplit=1) for line in checkpoints.SHIPPED_SUMS.read_text().splitlines()
        )
    }
    on_disk = {
        str(p.relative_to(checkpoints.SHIPPED_DIR))
        for p in checkpoints.SHIPPED_DIR.rglob("*.safetensors")
    }
    assert set(recorded) == on_disk
    for name, digest in recorded.items():
        assert checkpoints.weights_sha256(checkpoints.SHIPPED_DIR / name) == digest


def test_json_output_is_strict_json():
    text = json_text({"precision": float("nan"), "rows": [1.0, float("inf")], "n": 2})
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert data == {"precision": None, "rows": [1.0, None], "n": 2}
    assert not math.isnan(data["n"])
