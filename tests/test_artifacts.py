"""Every artefact in data/ is documented, checksummed, and verified by its loader."""

import pytest

from diffusion_lib import artifacts

DOCS = {"README.md", "checksums.sha256"}


def _artefacts():
    return sorted(p.name for p in artifacts.DATA_DIR.iterdir() if p.is_file() and p.name not in DOCS)


def test_every_artefact_is_listed_documented_and_matches():
    readme = (artifacts.DATA_DIR / "README.md").read_text()
    recorded = artifacts.recorded_checksums()
    assert sorted(recorded) == _artefacts()
    for name in _artefacts():
        assert f"`{name}`" in readme, f"data/{name} is not described in data/README.md"
        assert artifacts.artifact_path(name).exists()


def test_a_changed_artefact_is_refused(tmp_path, monkeypatch):
    (tmp_path / "thing.bin").write_bytes(b"original")
    (tmp_path / "checksums.sha256").write_text(f"{artifacts.sha256(tmp_path / 'thing.bin')}  thing.bin\n")
    monkeypatch.setattr(artifacts, "DATA_DIR", tmp_path)
    monkeypatch.setattr(artifacts, "CHECKSUMS", tmp_path / "checksums.sha256")
    assert artifacts.artifact_path("thing.bin") == tmp_path / "thing.bin"
    (tmp_path / "thing.bin").write_bytes(b"tampered")
    with pytest.raises(artifacts.ArtifactError, match="checksum"):
        artifacts.artifact_path("thing.bin")
    with pytest.raises(artifacts.ArtifactError, match="not listed"):
        artifacts.artifact_path("other.bin")
