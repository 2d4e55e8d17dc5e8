"""`lang` parsing, the reader's language, and cutting a real kill's names down."""

from __future__ import annotations

from typing import Any

import pytest
import ujson

from killboard.kill.codec import default_renderer
from killboard.kill.langs import BadLang, filter_names, parse_langs, reader_language
from killboard.kill.validate import parse_submission
from killboard.live.wire import body_in


def test_parse_langs() -> None:
    assert parse_langs(None) is None
    assert parse_langs("en") == ("en",)
    assert parse_langs("RU, de") == ("de", "ru") == parse_langs("de,ru,de")  # one variant for both orders
    assert parse_langs("en,de,es,fr,ja,ko,ru,zh") is None  # all eight: the full object
    for bad in ("", ",", "xx", "en,klingon", "e n"):
        with pytest.raises(BadLang, match="lang"):
            parse_langs(bad)


def test_reader_language() -> None:
    assert reader_language("de-DE,de;q=0.9,en;q=0.8") == "de"
    assert reader_language("pt-BR,pt;q=0.9,ja;q=0.5,en;q=0.6") == "en"
    assert reader_language("pt-BR, fr;q=0.1") == "fr"
    assert reader_language("zh-CN;q=0, ko") == "ko"
    assert reader_language("") == reader_language("tlh") == reader_language("de;q=x") == "en"


def test_filter_names_on_real_kills(killmails: list[dict[str, Any]]) -> None:
    render = default_renderer()
    for km in killmails:
        body = render(parse_submission(km), {}, None)
        whole = ujson.loads(body)
        cut = ujson.loads(body_in(body, ("ja",)))
        assert ujson.loads(body) == whole  # one decode serves every variant: never changed in place
        assert cut.keys() == whole.keys() and len(cut["attackers"]) == len(whole["attackers"])
        for before, after in [
            (whole["victim"]["ship_name"], cut["victim"]["ship_name"]),
            (whole["region_name"], cut["region_name"]),
        ]:
            assert after == ({"ja": before["ja"]} if "ja" in before else {"en": before["en"]})
        for item, item_cut in zip(whole["items"], cut["items"], strict=True):
            assert set(item_cut["name"]) <= {"ja", "en"} and len(item_cut["name"]) == 1
            assert {k: v for k, v in item_cut.items() if k not in ("name", "group_name", "items")} == {
                k: v for k, v in item.items() if k not in ("name", "group_name", "items")
            }
        assert filter_names(whole, ("en",))["victim"]["character_name"] == whole["victim"]["character_name"]
