"""Which board the app runs as: config.py's BOARD first, then the board the
image was built for (board_image, frozen in by tools/fwbuild.py), so a pico32
or slave_module UF2 needs no config.py to run as what it is."""
import sys
import types

import pytest

import tools  # noqa: F401  (firmware on sys.path)
import app


@pytest.fixture
def image(monkeypatch):
    def put(board):
        monkeypatch.setitem(sys.modules, "board_image", types.SimpleNamespace(BOARD=board))
    return put


def test_config_names_the_board_over_the_image(image):
    image("slave_module")
    assert app.board_name(types.SimpleNamespace(BOARD="pico32")) == "pico32"


def test_the_image_names_the_board_without_config(image):
    image("slave_module")
    assert app.board_name(None) == "slave_module"
    image("pico32")
    assert app.board_name(types.SimpleNamespace()) == "pico32"


def test_no_image_and_no_config_on_the_host_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "board_image", None)   # import fails
    with pytest.raises(ValueError):
        app.board_name(None)
