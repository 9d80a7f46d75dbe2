"""Small versioned files in data/, each verified against its recorded checksum before use.

data/checksums.sha256 (the `sha256sum` format) lists every artefact; data/README.md says what each
one is and the exact command that made it. A file that was changed by hand, truncated or replaced
fails loudly instead of giving a wrong result.
"""

import hashlib
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
CHECKSUMS = DATA_DIR / "checksums.sha256"


class ArtifactError(RuntimeError):
    """An artefact is missing, unlisted, or does not match its recorded checksum."""


def sha256(path):
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_checksums():
    """{file name: hex sha256} from data/checksums.sha256."""
    if not CHECKSUMS.exists():
        return {}
    pairs = (line.split(maxsplit=1) for line in CHECKSUMS.read_text().splitlines() if line.strip())
    return {name.lstrip("*").strip(): digest for digest, name in pairs}


def artifact_path(name):
    """The path of data/<name> after checking it against its recorded checksum."""
    path = DATA_DIR / name
    expected = recorded_checksums().get(name)
    if expected is None:
        raise ArtifactError(f"data/{name} is not listed in data/checksums.sha256; see data/README.md")
    if not path.exists():
        raise ArtifactError(f"data/{name} is missing; data/README.md gives the command that makes it")
    actual = sha256(path)
    if actual != expected:
        raise ArtifactError(f"data/{name} has checksum {actual[:12]}..., expected {expected[:12]}...: "
                            "the file changed; regenerate it with the command in data/README.md")
    return path
