"""The bundled static data loads and holds known EVE facts (values read from the SDE CSVs)."""

from pathlib import Path

import pytest

from killboard.kill.staticdata import (
    LANGUAGES,
    CategoryInfo,
    ConstellationInfo,
    FlagInfo,
    GroupInfo,
    NpcCorporation,
    StaticData,
    SystemInfo,
    TypeInfo,
    load_static,
)

DATA_DIR = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def static() -> StaticData:
    return load_static(DATA_DIR)


def test_table_sizes(static: StaticData) -> None:
    assert len(static.types) == 53_289
    assert len(static.groups) == 1_611
    assert len(static.categories) == 48
    assert len(static.systems) == 8_436
    assert len(static.constellations) == 1_174
    assert len(static.regions) == 112
    assert len(static.factions) == 27
    assert len(static.npc_corporations) == 283
    assert len(static.flags) == 138
    assert len(static.jita_prices) == 1_128
    assert len(static.fixed_prices) == 76


def test_rifter(static: StaticData) -> None:
    assert static.types[587] == TypeInfo(587, 25, 6, "Rifter", 400000.0)
    names = static.type_names(587)
    assert list(names) == list(LANGUAGES)  # all eight, "en" first
    assert names["en"] == "Rifter"
    assert names["de"] == "Rifter"
    assert names["ru"] == "Rifter"
    assert names["ja"] == "リフター"
    assert names["zh"] == "裂谷级"
    assert static.type_names(587) is names  # cached


def test_frigate_group_and_ship_category(static: StaticData) -> None:
    frigate = static.groups[25]
    assert frigate.category_id == 6
    assert frigate.names["en"] == "Frigate"
    assert frigate.names["de"] == "Fregatte"
    assert frigate.names["ru"] == "Фрегат"
    assert static.categories[6] == CategoryInfo(
        6,
        {
            "en": "Ship",
            "de": "Schiff",
            "es": "Nave",
            "fr": "Vaisseau",
            "ja": "艦船",
            "ko": "함선",
            "ru": "Корабль",
            "zh": "舰船",
        },
    )


def test_capsule(static: StaticData) -> None:
    capsule = static.types[670]
    assert (capsule.name, capsule.group_id, capsule.category_id) == ("Capsule", 29, 6)
    assert capsule.base_price is None
    assert static.groups[29].names["en"] == "Capsule"
    assert static.type_names(670)["es"] == "Cápsula"


def test_names_with_commas_and_quotes(static: StaticData) -> None:
    assert static.types[3958].name == 'GDN-9 "Nightstalker" Combat Goggles'
    assert static.type_names(3958)["ko"] == 'GDN-9 "나이트스토커" 전투형 고글'
    assert static.type_names(17765)["en"] == "Exotic Dancers, Female"
    assert static.type_names(17765)["ru"] == "Exotic Dancers, Female"
    assert static.type_names(17765)["fr"] == "Danseurs exotiques – Femme"


def test_english_name_is_the_current_one(static: StaticData) -> None:
    # Type 444 was "Survey Scanner I" in the older translated build.
    assert static.types[444].name == "Mining Survey Chipset I"
    assert static.type_names(444)["en"] == "Mining Survey Chipset I"
    assert static.type_names(444)["de"] == "Survey Scanner I"


def test_type_without_translations_has_english_only(static: StaticData) -> None:
    assert static.type_names(80372) == {"en": "Deepflow Rift"}


def test_group_translations_drop_empty_names(static: StaticData) -> None:
    assert static.groups[4547] == GroupInfo(4547, 2, {"en": "Interstellar Shipcaster Beacon"})
    ytirium = static.groups[4514]  # every name but the Chinese one in the source
    assert ytirium.names["en"] == "Ytirium"
    assert ytirium.names["ru"] == "Ютирий"
    assert list(ytirium.names) == ["en", "de", "es", "fr", "ja", "ko", "ru"]


def test_jita(static: StaticData) -> None:
    jita = static.systems[30000142]
    assert jita == SystemInfo(30000142, "Jita", 0.945913116665, 20000020, 10000002, None)
    assert round(jita.security, 1) == 0.9
    assert static.constellations[20000020] == ConstellationInfo(20000020, "Kimotoro", 10000002)
    forge = static.regions[10000002]
    assert forge.names == {"en": "The Forge"}
    assert forge.faction_id == 500001


def test_security_edge_and_wormholes(static: StaticData) -> None:
    assert static.systems[30000380].name == "Polaris"
    assert static.systems[30000380].security == -0.0006333671279670217
    assert static.systems[30002187].security == 1.0  # Amarr
    assert static.systems[31000001].wormhole_class_id == 14
    assert static.systems[31000005].name == "Thera"
    assert static.regions[10000070].names == {"en": "Pochven"}


def test_factions(static: StaticData) -> None:
    caldari = static.factions[500001]
    assert caldari.names == {
        "en": "Caldari State",
        "de": "Caldari State",
        "es": "Estado Caldari",
        "fr": "État caldari",
        "ja": "カルダリ連合",
        "ko": "칼다리 연합",
        "ru": "Государство Калдари",
        "zh": "加达里合众国",
    }
    assert static.factions[500006].names["en"] == "CONCORD Assembly"


def test_npc_corporations(static: StaticData) -> None:
    assert static.npc_corporations[1000125] == NpcCorporation(1000125, "CONCORD", 500006)
    assert static.npc_corporations[1000035] == NpcCorporation(1000035, "Caldari Navy", 500001)
    assert static.npc_corporations[1000001] == NpcCorporation(1000001, "Doomheim", None)


def test_flags(static: StaticData) -> None:
    assert static.flags[5] == FlagInfo(5, "Cargo", "Cargo")
    assert static.flags[27] == FlagInfo(27, "HiSlot0", "High power slot 1")
    assert static.flags[87] == FlagInfo(87, "DroneBay", "Drone Bay")


def test_prices(static: StaticData) -> None:
    assert static.jita_prices[34] == 5.23  # Tritanium
    assert static.jita_prices[35] == 8.86  # Pyerite
    assert static.fixed_prices[671] == 147414186237.0  # Erebus
    assert static.types[671].base_price == 178800000000.0
    assert static.fixed_prices[635] == 500000000000.0
    assert 587 not in static.fixed_prices


def test_unknown_ids(static: StaticData) -> None:
    assert static.types.get(1) is None
    assert static.type_names(1) == {}
    assert static.type_names(-5) == {}
    assert static.type_names(999_999_999) == {}
    assert static.groups.get(999_999) is None
    assert static.systems.get(1) is None
    assert static.regions.get(1) is None
    assert static.npc_corporations.get(98_000_001) is None
    assert static.flags.get(100_000) is None
    assert static.jita_prices.get(670) is None


def test_hand_built_static_data() -> None:
    """Other modules' tests can build a tiny StaticData without the bundle."""
    static = StaticData(
        types={587: TypeInfo(587, 25, 6, "Rifter", None)},
        groups={25: GroupInfo(25, 6, {"en": "Frigate"})},
    )
    assert static.type_names(587) == {"en": "Rifter"}
    assert static.type_names(588) == {}
    assert static.systems == {}


def test_stale_bundle_is_refused(tmp_path: Path) -> None:
    for source in DATA_DIR.glob("*.gz"):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    (tmp_path / "type_names.tsv.gz").write_bytes(b"not the indexed file")
    with pytest.raises(ValueError, match="rebuild"):
        load_static(tmp_path)
