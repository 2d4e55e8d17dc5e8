"""Deflate libraries on the real kills, as ratios to stdlib zlib in the same run: the kill frames
(all languages and `lang=en`, raw deflate with a sync flush as permessage-deflate sends them, per
window size) and the stored source documents (raw deflate with the preset dictionary, a primed
compressor copied per kill), and the participant index's pilot rows (`participants.pack` against
the stdlib zlib 9 it used before, on the real kills and a 10,000-attacker fleet fight). Every
output is checked to inflate with stdlib zlib.

    python -m bench.compress [--reps 7] [--levels]

`--levels` prints every level of every library; without it, the levels that matter here (the
live feed's 6, the burst's 1, and the libraries' nearest ones). Libraries that are not
installed (zlib-ng, isal) are left out.
"""

from __future__ import annotations

import argparse
import importlib
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import ModuleType
from typing import Any, TypeVar

import ujson

from killboard.bus import writer as bus_writer
from killboard.config import PROJECT_ROOT
from killboard.kill import codec
from killboard.kill.enrich import enrich
from killboard.kill.frames import encode, kill_frame
from killboard.kill.langs import filter_names
from killboard.kill.prices import price_book
from killboard.kill.staticdata import load_static
from killboard.kill.validate import parse_submission
from killboard.live import wire
from killboard.storage import participants

from .__main__ import table
from .data import fleet_fight, real_killmails
from .procstat import load_average

LIBRARIES = {"zlib": "zlib", "zlib-ng": "zlib_ng.zlib_ng", "isal": "isal.isal_zlib"}
# (library, levels) shown without --levels: main's levels and each library's nearest ones.
SHORT = {"zlib": (1, 6), "zlib-ng": (1, 2, 4, 6, 7, 9), "isal": (1, 2, 3)}
FULL = {"zlib": range(1, 10), "zlib-ng": range(1, 10), "isal": range(4)}
TRAILER = b"\x00\x00\xff\xff"
T = TypeVar("T")


def libraries() -> dict[str, ModuleType]:
    out = {}
    for name, module in LIBRARIES.items():
        try:
            out[name] = importlib.import_module(module)
        except ImportError:
            print(f"({name} not installed: left out)")
    return out


def per_item_us(fn: Callable[[T], Any], items: Sequence[T], reps: int) -> float:
    """The best of `reps` passes over the items, in µs an item (the least disturbed pass)."""
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def frame_deflater(lib: ModuleType, level: int, wbits: int) -> Callable[[bytes], bytes]:
    def run(message: bytes) -> bytes:
        c = lib.compressobj(level, lib.DEFLATED, -wbits)
        return c.compress(message) + c.flush(lib.Z_SYNC_FLUSH)

    return run


def doc_packer(lib: ModuleType, level: int, dictionary: bytes) -> Callable[[bytes], bytes]:
    primed = lib.compressobj(level, lib.DEFLATED, -15, 8, lib.Z_DEFAULT_STRATEGY, dictionary)
    copies = hasattr(primed, "copy")

    def run(document: bytes) -> bytes:
        c = (
            primed.copy()
            if copies
            else lib.compressobj(level, lib.DEFLATED, -15, 8, lib.Z_DEFAULT_STRATEGY, dictionary)
        )
        return c.compress(document) + c.flush()

    return run


def inflates(outputs: list[bytes], inputs: Sequence[bytes], wbits: int, dictionary: bytes = b"") -> bool:
    for out, original in zip(outputs, inputs, strict=True):
        d = zlib.decompressobj(-wbits, dictionary) if dictionary else zlib.decompressobj(-wbits)
        if d.decompress(out + (TRAILER if not dictionary else b"")) != original:
            return False
    return True


def rows_for(
    libs: dict[str, ModuleType],
    levels: Mapping[str, Sequence[int]],
    make: Callable[[ModuleType, int], Callable[[bytes], bytes]],
    items: Sequence[bytes],
    reps: int,
    check: Callable[[list[bytes]], bool],
    baselines: Sequence[int],
) -> list[list[Any]]:
    """One row per (library, level): µs and bytes an item, and both as ratios to stdlib zlib at
    each of the `baselines` levels, measured in this run."""
    measured: dict[tuple[str, int], tuple[float, float]] = {}
    for name, lib in libs.items():
        for level in levels[name]:
            fn = make(lib, level)
            outputs = [fn(item) for item in items]
            if not check(outputs):
                raise SystemExit(f"{name} level {level}: does not inflate with stdlib zlib")
            size = sum(len(o) for o in outputs) / len(items)
            measured[(name, level)] = (per_item_us(fn, items, reps), size)
    for level in baselines:  # the baselines themselves, also when not asked for
        if ("zlib", level) not in measured:
            fn = make(zlib, level)
            measured[("zlib", level)] = (per_item_us(fn, items, reps), sum(len(fn(i)) for i in items) / len(items))
    rows = []
    for (name, level), (us, size) in measured.items():
        row: list[Any] = [name, level, f"{us:.1f}", f"{size:,.0f}"]
        for base in baselines:
            base_us, base_size = measured[("zlib", base)]
            row += [f"{us / base_us:.2f}x", f"{size / base_size:.3f}x"]
        rows.append(row)
    return rows


def real_inputs() -> tuple[list[bytes], list[bytes], list[bytes], list[list[participants.PilotRow]]]:
    """The 82 real kills' frames (all languages, `lang=en`), stored source documents and pilot
    rows (and, last, those of a 10,000-attacker fleet fight)."""
    static = load_static(PROJECT_ROOT / "data")
    prices = price_book(static)
    subs = [parse_submission(km) for km in real_killmails()]
    enriched = [enrich(s, static, {}, prices) for s in subs]
    frames = [kill_frame(123_456_789, encode(k)) for k in enriched]
    english = [kill_frame(123_456_789, encode(filter_names(ujson.loads(encode(k)), ("en",)))) for k in enriched]
    documents = [
        codec.source_document(s.esi or {}, s.zkb, codec.kill_prices(k)) for s, k in zip(subs, enriched, strict=True)
    ]
    pilots = [list(participants.participation(k).pilots) for k in enriched]
    fight = enrich(parse_submission(fleet_fight(real_killmails(), 10_000)), static, {}, prices)
    pilots.append(list(participants.participation(fight).pilots))
    return frames, english, documents, pilots


def zlib9_pack(pilots: Sequence[participants.PilotRow]) -> bytes:
    """participants.pack as it was before isal: the same varints through stdlib zlib 9."""
    out = bytearray()
    for field in range(len(pilots[0]) if pilots else 0):
        for pilot in pilots:
            participants._varint(pilot[field], out)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(bytes(out)) + packer.flush()


def pilot_rows(pilots: list[list[participants.PilotRow]], reps: int) -> list[list[str]]:
    """participants.pack against zlib9_pack, each timed whole (varints and deflate)."""
    out = []
    for label, items in (("82 real kills", pilots[:-1]), ("10,000 attackers", pilots[-1:])):
        for row in items:
            if participants.unpack(participants.pack(row)) != row or participants.unpack(zlib9_pack(row)) != row:
                raise SystemExit("pilot rows do not round-trip")
        us, base_us = per_item_us(participants.pack, items, reps), per_item_us(zlib9_pack, items, reps)
        size = sum(len(participants.pack(r)) for r in items) / len(items)
        base_size = sum(len(zlib9_pack(r)) for r in items) / len(items)
        out.append(
            [label, f"{us:.1f}", f"{base_us:.1f}", f"{us / base_us:.2f}x", f"{size:,.0f}", f"{size / base_size:.3f}x"]
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--levels", action="store_true", help="every level of every library")
    args = ap.parse_args()
    libs = libraries()
    levels = {name: (FULL if args.levels else SHORT)[name] for name in libs}
    frames, english, documents, pilots = real_inputs()
    print(f"load average {load_average()}; 82 real kills")

    head = ["library", "level", "µs a kill", "bytes"]
    head += ["CPU ÷ zlib 6", "bytes ÷ zlib 6", "CPU ÷ zlib 1", "bytes ÷ zlib 1"]
    for label, items in (("all languages", frames), ("lang=en", english)):
        for bits in wire.WINDOWS[::-1]:
            avg = sum(len(f) for f in items) / len(items)
            print(f"\nkill frames, {label} ({avg:,.0f} B), window {bits} bits (server_max_window_bits={bits})")
            rows = rows_for(
                libs,
                levels,
                partial(frame_deflater, wbits=bits),
                items,
                args.reps,
                partial(inflates, inputs=items, wbits=bits),
                (6, 1),
            )
            print(table(head, rows))

    # The dictionary from half the kills, measured on the other half (as bench/storage.py): the
    # shipped dictionary holds the bundled kills themselves.
    dictionary = codec.build_dictionary(documents[0::2])
    held_out = documents[1::2]
    print(f"\nstored source documents ({sum(map(len, held_out)) / len(held_out):,.0f} B), held-out dictionary")
    rows = rows_for(
        libs,
        levels,
        lambda lib, level: doc_packer(lib, level, dictionary),
        held_out,
        args.reps,
        lambda outs: inflates(outs, held_out, 15, dictionary),
        (6,),
    )
    print(table(head[:6], rows))

    # What killboard runs now (wire.deflate, codec.pack) against stdlib zlib at the same levels.
    print("\nkillboard's own calls (whatever library they picked) ÷ stdlib zlib at the level main uses")
    chosen = []
    for label, fn, base, items in (
        ("wire.deflate, live (6)", lambda m: wire.deflate(m, 6), frame_deflater(zlib, 6, 15), frames),
        ("wire.deflate, burst (1)", lambda m: wire.deflate(m, 1), frame_deflater(zlib, 1, 15), frames),
        # The bus writer's entry bodies: zlib format (header and checksum), level 1.
        ("bus writer (1)", lambda m: bus_writer._deflate.compress(m, 1), lambda m: zlib.compress(m, 1), frames),
        (
            f"codec.pack ({codec.PACK_LEVEL})",
            partial(codec.pack, dictionary=dictionary),
            doc_packer(zlib, 6, dictionary),
            held_out,
        ),
    ):
        us, base_us = per_item_us(fn, items, args.reps), per_item_us(base, items, args.reps)
        size = sum(len(fn(i)) for i in items) / len(items)
        base_size = sum(len(base(i)) for i in items) / len(items)
        chosen.append([label, f"{us:.1f}", f"{base_us:.1f}", f"{us / base_us:.2f}x", f"{size / base_size:.3f}x"])
    print(table(["call", "µs a kill", "zlib µs", "CPU ratio", "bytes ratio"], chosen))

    print(f"\nparticipants.pack (level {participants.PACK_LEVEL} of {participants._deflate.__name__}) ÷ stdlib zlib 9")
    head = ["pilot rows", "µs a kill", "zlib 9 µs", "CPU ratio", "bytes", "bytes ratio"]
    print(table(head, pilot_rows(pilots, args.reps)))


if __name__ == "__main__":
    main()
