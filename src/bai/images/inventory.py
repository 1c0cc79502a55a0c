"""What ``bai image list`` shows: each local bai image against the current catalog (I/O-free)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from bai.agent.environments.catalog import Catalog, CatalogError
from bai.images.docker import ImageInfo
from bai.images.recipe import (
    L_BASE_HASH,
    L_BASED_ON,
    L_CATALOG_HASH,
    L_ENVIRONMENT,
    BaseRecipe,
    RecipeError,
    image_recipe,
)


@dataclass(frozen=True)
class ImageRow:
    image: str
    environment: str
    size: int
    created: str
    #: the image is what the current catalog (or base recipe) builds
    current: bool
    status: str

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def _status(info: ImageInfo, catalog: Catalog, base: BaseRecipe) -> tuple[str, bool, str]:
    """(environment, current, why) for one image."""
    labels = info.labels
    if L_ENVIRONMENT not in labels:
        current = labels.get(L_BASE_HASH) == base.digest()
        return "(base)", current, "current" if current else "another base recipe (rebuilt by bai image build)"
    key = labels[L_ENVIRONMENT]
    if L_BASED_ON in labels:
        return key, True, f"registered, based on {labels[L_BASED_ON]}"
    try:
        wanted = image_recipe(catalog.resolve(key), base).catalog_hash
    except (CatalogError, RecipeError):
        return key, False, "not in the catalog"
    if labels.get(L_CATALOG_HASH) == wanted:
        return key, True, "current"
    return key, False, "stale: the catalog entry, the base or the generator changed"


def _name(info: ImageInfo) -> str:
    bai_tags = [tag for tag in info.tags if tag.startswith("bai/")]
    return (bai_tags or list(info.tags) or [info.id.removeprefix("sha256:")[:12]])[0]


def image_rows(infos: Iterable[ImageInfo], catalog: Catalog, base: BaseRecipe) -> list[ImageRow]:
    """One row per image: the base first, then by environment."""
    rows = []
    for info in infos:
        environment, current, status = _status(info, catalog, base)
        rows.append(ImageRow(_name(info), environment, info.size, info.created, current, status))
    return sorted(rows, key=lambda row: (row.environment != "(base)", row.environment, row.image))


def human_size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
