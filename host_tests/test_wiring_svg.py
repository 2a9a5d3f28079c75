"""Every pin of every board's PINS table is in that board's committed wiring picture."""
import html
import importlib
import os
import re

import pytest

import tools  # noqa: F401
from tools import gen_wiring

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def board_pins(pins):
    """Every MCU pin named in a PINS table, read independently of gen_wiring."""
    out = []
    for key, v in pins.items():
        if key == "relay_active_low" or v is None:
            continue
        if key in ("i2c", "i2c_top"):
            out += list(v[1:3])
        elif key == "spi":
            out += list(v[1:4])
        elif key in ("rs485", "ttl"):
            out += list(v[1:])
        elif key == "ntc":
            out += [p for p, _role in v]
        elif isinstance(v, tuple):
            out += list(v)
        else:
            out.append(v)
    return out


def svg_texts(path):
    with open(path) as f:
        svg = f.read()
    return [html.unescape(re.sub(r"<[^>]+>", "", t))
            for t in re.findall(r"<text[^>]*>(.*?)</text>", svg, re.S)]


@pytest.mark.parametrize("board", gen_wiring.BOARDS)
def test_every_pin_is_in_the_picture(board):
    pins = importlib.import_module("boards." + board).PINS
    texts = svg_texts(os.path.join(ROOT, "docs", "wiring_%s.svg" % board))
    labels = [t.strip() for t in texts]
    expected = board_pins(pins)
    assert expected
    for p in expected:
        name = gen_wiring.pin_name(board, p)
        assert any(t.startswith(name + " ") for t in labels), (board, name, labels)


def test_the_check_notices_a_missing_pin(tmp_path, monkeypatch):
    # A pin added to a table but not drawn must fail the check above.
    pins = dict(importlib.import_module("boards.pico").PINS)
    pins["extra"] = 6          # free on the Pico map (the 32S board's I2C1)
    texts = svg_texts(os.path.join(ROOT, "docs", "wiring_pico.svg"))
    assert not any(t.strip().startswith("GP6 ") for t in texts)
    assert 6 in board_pins(pins)


def test_pictures_are_linked_from_readme_and_wiring_doc():
    for doc in ("README.md", os.path.join("docs", "wiring.md")):
        with open(os.path.join(ROOT, doc)) as f:
            text = f.read()
        for board in gen_wiring.BOARDS:
            assert "wiring_%s.svg" % board in text, (doc, board)
