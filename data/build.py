"""Regenerate the static-data bundle (this folder) from a reference-data folder.

For maintainers only: the server and its tests read the bundle, never the source folder.

    python data/build.py SOURCE_DIR [--out DIR]

SOURCE_DIR is laid out like the team's reference data: ``sde/*.csv[.gz]``, ``prices/*.csv``
and ``licenses/*.txt``. The output is deterministic (rows sorted by id, gzip mtime 0), so an
unchanged source rebuilds byte-identical files. See data/README.md for the file formats.
"""

import argparse
import csv
import gzip
import io
import json
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Same order as killboard.kill.staticdata.LANGUAGES (not imported: this script stands alone).
LANGUAGES = ("en", "de", "es", "fr", "ja", "ko", "ru", "zh")
OTHER_LANGUAGES = LANGUAGES[1:]
TYPE_NAMES_CHUNK = 64  # lines per gzip member of type_names.tsv.gz (~17 KB inflated)


def read_csv(source: Path, stem: str) -> list[dict[str, str]]:
    """Rows of ``source/stem.csv.gz`` or ``source/stem.csv``, whichever exists."""
    for path in (source / f"{stem}.csv.gz", source / f"{stem}.csv"):
        if path.exists():
            raw = path.read_bytes()
            if path.suffix == ".gz":
                raw = gzip.decompress(raw)
            return list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))
    raise SystemExit(f"missing {source / stem}.csv[.gz]")


def opt_int(value: str) -> int | None:
    return int(value) if value else None


def opt_float(value: str) -> float | None:
    return float(value) if value else None


def names(row: dict[str, str]) -> list[str]:
    """Name translations in LANGUAGES order ("" where the source has none)."""
    return [row["name"]] + [row[f"name_{lang}"] for lang in OTHER_LANGUAGES]


def table(
    rows: Iterable[dict[str, str]],
    columns: tuple[str, ...],
    convert: Callable[[dict[str, str]], list[Any]],
) -> dict[str, list[Any]]:
    """A bundle table, column-wise ({column: [values]}), rows sorted by the first column (the id)."""
    out = sorted((convert(row) for row in rows), key=lambda r: r[0])
    ids = [r[0] for r in out]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"duplicate ids in table with columns {columns}")
    return {column: [r[i] for r in out] for i, column in enumerate(columns)}


def write_gz(path: Path, text: str) -> None:
    path.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))


def write_json_gz(path: Path, data: dict[str, list[Any]]) -> None:
    """One line per column: ``{"type_id":[…],\n"group_id":[…]}``."""
    lines = (f"{json.dumps(c)}:{json.dumps(v, ensure_ascii=False, separators=(',', ':'))}" for c, v in data.items())
    write_gz(path, "{" + ",\n".join(lines) + "}\n")


def type_names_files(rows: list[dict[str, str]], type_ids: set[int]) -> tuple[bytes, dict[str, Any]]:
    """The type-name translations as a chunked gzip TSV plus its index.

    TSV: ``type_id`` and the 7 non-English names, one line per type that has at least one of
    them, sorted by type_id. The gzip file holds one member for the header line, then one
    member per TYPE_NAMES_CHUNK lines, so the loader can keep the compressed bytes in memory
    and inflate only the chunk holding a wanted type. Index: the first type_id and the byte
    offset of each chunk's member.
    """
    lines = []
    for row in sorted(rows, key=lambda r: int(r["type_id"])):
        type_id = int(row["type_id"])
        values = [row[lang] for lang in OTHER_LANGUAGES]
        if type_id not in type_ids or not any(values):
            continue
        if any(ch in v for v in values for ch in "\t\r\n"):
            raise SystemExit(f"type {type_id}: a name contains a tab or newline")
        lines.append((type_id, "\t".join((str(type_id), *values)) + "\n"))
    header = "\t".join(("type_id", *OTHER_LANGUAGES)) + "\n"
    members = [gzip.compress(header.encode("utf-8"), compresslevel=9, mtime=0)]
    chunks = []
    offset = len(members[0])
    for start in range(0, len(lines), TYPE_NAMES_CHUNK):
        part = lines[start : start + TYPE_NAMES_CHUNK]
        member = gzip.compress("".join(text for _, text in part).encode("utf-8"), compresslevel=9, mtime=0)
        chunks.append([part[0][0], offset])
        members.append(member)
        offset += len(member)
    index = {"languages": list(OTHER_LANGUAGES), "size": offset, "chunks": chunks}
    return b"".join(members), index


def build(source: Path, out: Path) -> list[Path]:
    sde, prices = source / "sde", source / "prices"
    tables: dict[str, dict[str, list[Any]]] = {
        "types": table(
            read_csv(sde, "types"),
            ("type_id", "group_id", "category_id", "name", "base_price"),
            lambda r: [
                int(r["type_id"]),
                int(r["group_id"]),
                int(r["category_id"]),
                r["name"],
                opt_float(r["base_price"]),
            ],
        ),
        "groups": table(
            read_csv(sde, "groups"),
            ("group_id", "category_id", "names"),
            lambda r: [int(r["group_id"]), int(r["category_id"]), names(r)],
        ),
        "categories": table(
            read_csv(sde, "categories"),
            ("category_id", "names"),
            lambda r: [int(r["category_id"]), names(r)],
        ),
        "solar_systems": table(
            read_csv(sde, "solar_systems"),
            ("system_id", "name", "security", "constellation_id", "region_id", "wormhole_class_id"),
            lambda r: [
                int(r["solar_system_id"]),
                r["name"],
                float(r["security"]),
                int(r["constellation_id"]),
                int(r["region_id"]),
                opt_int(r["wormhole_class_id"]),
            ],
        ),
        "constellations": table(
            read_csv(sde, "constellations"),
            ("constellation_id", "name", "region_id"),
            lambda r: [int(r["constellation_id"]), r["name"], int(r["region_id"])],
        ),
        "regions": table(
            read_csv(sde, "regions"),
            ("region_id", "name", "faction_id"),
            lambda r: [int(r["region_id"]), r["name"], opt_int(r["faction_id"])],
        ),
        "factions": table(
            read_csv(sde, "factions"),
            ("faction_id", "names"),
            lambda r: [int(r["faction_id"]), names(r)],
        ),
        "npc_corporations": table(
            read_csv(sde, "npc_corporations"),
            ("corporation_id", "name", "faction_id"),
            lambda r: [int(r["corporation_id"]), r["name"], opt_int(r["faction_id"])],
        ),
        "inventory_flags": table(
            read_csv(sde, "inventory_flags"),
            ("flag_id", "name", "text"),
            lambda r: [int(r["flag_id"]), r["flag_name"], r["flag_text"]],
        ),
        "jita_prices": table(
            read_csv(prices, "jita_average"),
            ("type_id", "price", "as_of"),
            lambda r: [int(r["type_id"]), float(r["average_price"]), r["as_of"]],
        ),
        "fixed_prices": table(
            read_csv(prices, "fixed_prices"),
            ("type_id", "price"),
            lambda r: [int(r["type_id"]), float(r["price"])],
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in tables.items():
        path = out / f"{name}.json.gz"
        write_json_gz(path, data)
        written.append(path)
    type_ids = set(tables["types"]["type_id"])
    blob, index = type_names_files(read_csv(sde, "type_names_i18n"), type_ids)
    path = out / "type_names.tsv.gz"
    path.write_bytes(blob)
    written.append(path)
    path = out / "type_names_index.json.gz"
    write_gz(path, json.dumps(index, separators=(",", ":")) + "\n")
    written.append(path)
    (out / "licenses").mkdir(exist_ok=True)
    for licence in sorted((source / "licenses").glob("*.txt")):
        target = out / "licenses" / licence.name
        shutil.copyfile(licence, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with sde/, prices/ and licenses/")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="bundle folder to write (default: this script's folder)",
    )
    args = parser.parse_args(argv)
    for path in build(args.source, args.out):
        print(f"{path.stat().st_size:>9,}  {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
