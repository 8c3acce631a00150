"""MovieLens-100K as shipped inside the recbole 1.2.1 wheel: fetch (sha256-checked), parse, map ids."""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / ".cache" / "movielens"

WHEEL = "recbole==1.2.1"
WHEEL_FILE = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"
FILES = ("ml-100k.inter", "ml-100k.item")

# Fixed namespaces keep the demo's ids stable across machines and runs.
USER_NAMESPACE = uuid.UUID("6f1c0d52-8f0e-4a52-9f2a-4d0c6c2b7a01")
MOVIE_NAMESPACE = uuid.UUID("6f1c0d52-8f0e-4a52-9f2a-4d0c6c2b7a02")
GENRE_NAMESPACE = uuid.UUID("6f1c0d52-8f0e-4a52-9f2a-4d0c6c2b7a03")


class DatasetUnavailable(Exception):
    """The wheel could not be fetched or failed its checksum."""


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    title: str
    year: int | None
    genres: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Interaction:
    user_id: str
    item_id: str
    rating: int  # 1..5 as in MovieLens
    timestamp: int


def user_uuid(user_id: str) -> uuid.UUID:
    return uuid.uuid5(USER_NAMESPACE, user_id)


def movie_uuid(item_id: str) -> uuid.UUID:
    return uuid.uuid5(MOVIE_NAMESPACE, item_id)


def genre_uuid(name: str) -> uuid.UUID:
    return uuid.uuid5(GENRE_NAMESPACE, name.lower())


def to_score(rating: int) -> int:
    """MovieLens stars 1..5 onto the cinema's 1..10 scale (2..10)."""
    return rating * 2


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheel(target: Path) -> Path:
    """`pip download --no-deps`, with the first pip this machine has; nothing is installed."""
    candidates = [[sys.executable, "-m", "pip"], ["python3", "-m", "pip"]]
    if shutil.which("uv"):
        # uv has no `pip download`; it unpacks into --target with the hash enforced instead.
        candidates.append(["uv"])
    for command in candidates:
        if command == ["uv"]:
            requirements = target / "requirements.txt"
            requirements.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
            unpacked = target / "unpacked"
            result = subprocess.run(
                [
                    "uv",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-deps",
                    "--require-hashes",
                    "--target",
                    str(unpacked),
                    "-r",
                    str(requirements),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode == 0:
                return unpacked
            logger.warning("uv could not fetch %s: %s", WHEEL, result.stderr.strip()[-300:])
            continue
        result = subprocess.run(
            [
                *command,
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-d",
                str(target),
                WHEEL,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wheel = target / WHEEL_FILE
        if result.returncode == 0 and wheel.exists():
            return wheel
        logger.debug("%s could not fetch %s: %s", command, WHEEL, result.stderr.strip()[-300:])
    raise DatasetUnavailable(f"could not download {WHEEL} (no network to the package index?)")


def fetch_dataset(cache: Path = DEFAULT_CACHE) -> Path:
    """The folder holding ml-100k.inter and ml-100k.item, fetched once into `cache`."""
    data_dir = cache / "ml-100k"
    if all((data_dir / name).exists() for name in FILES):
        return data_dir
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / WHEEL_FILE
    if not wheel.exists() or sha256_of(wheel) != WHEEL_SHA256:
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            fetched = _download_wheel(Path(tmp))
            if fetched.is_dir():
                source = fetched / MEMBER_DIR
                data_dir.mkdir(parents=True, exist_ok=True)
                for name in FILES:
                    shutil.copyfile(source / name, data_dir / name)
                return data_dir
            if sha256_of(fetched) != WHEEL_SHA256:
                raise DatasetUnavailable(f"{WHEEL_FILE} failed its sha256 check")
            shutil.move(fetched, wheel)
    data_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in FILES:
            (data_dir / name).write_bytes(archive.read(MEMBER_DIR + name))
    return data_dir


def _rows(path: Path) -> list[list[str]]:
    with path.open(encoding="latin-1", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)  # typed header, e.g. `item_id:token`
        return [row for row in reader if row]


def read_items(data_dir: Path) -> list[Item]:
    items = []
    for item_id, title, year, genres in _rows(data_dir / "ml-100k.item"):
        items.append(
            Item(
                item_id=item_id,
                title=title.strip(),
                year=int(year) if year.strip().isdigit() else None,
                genres=tuple(genres.split()),
            )
        )
    return items


def read_interactions(data_dir: Path) -> list[Interaction]:
    return [
        Interaction(user_id=u, item_id=i, rating=int(float(r)), timestamp=int(float(t)))
        for u, i, r, t in _rows(data_dir / "ml-100k.inter")
    ]
