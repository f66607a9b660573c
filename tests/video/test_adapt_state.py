"""The call's adaptation on the server side: the settings the room page carries (from config.py) and
the call state that tells the other doctor of an automatic switch and of what is received."""

from __future__ import annotations

import html
import json
import re

import pytest

from tests.conftest import IsolatedSocketClient, login
from webapp.video import services


@pytest.fixture
def world(make):
    rural, specialist = make.rural(), make.specialist()
    return rural, specialist, make.scheduled(rural, specialist)


@pytest.fixture
def joined(app):
    """joined(user, ref): a /call client of that user, joined to the consult's call; each leaves at
    the end (a client left connected stays in the app's call table, seen by later tests)."""
    made = []

    def join(user, ref):
        flask_client = app.test_client()
        login(flask_client, user)
        client = IsolatedSocketClient(app, flask_client, "/call")
        made.append(client)
        assert client.emit("join", {"ref": ref}, namespace="/call", callback=True)["ok"]
        return client

    yield join
    for client in made:
        if client.is_connected("/call"):
            client.disconnect("/call")


def _events(client, name):
    return [e["args"][0] for e in client.get_received("/call") if e["name"] == name]


def test_call_settings_come_from_the_config(app, monkeypatch):
    defaults = services.call_settings(app.config)
    assert defaults["adapt"] == {"enabled": True, "min_kbps": 150, "max_loss_pct": 10, "max_rtt_ms": 1000,
                                 "max_jitter_ms": 100, "down_seconds": 4, "up_seconds": 15, "max_up_seconds": 120,
                                 "quiet_seconds": 10}
    assert defaults["video"] == {"max_kbps": 350, "scale_down": 1.0, "max_fps": 20, "degradation": "balanced"}
    assert defaults["opus"] == {"fec": True, "dtx": True}
    assert defaults["ice"] == {"grace_seconds": 3}
    monkeypatch.setitem(app.config, "CALL_DEGRADATION_PREFERENCE", "maintain-resolution")
    monkeypatch.setitem(app.config, "CALL_VIDEO_SCALE_DOWN", 0.5)  # never upscaled
    monkeypatch.setitem(app.config, "CALL_OPUS_DTX", False)
    changed = services.call_settings(app.config)
    assert changed["video"]["degradation"] == "maintain-resolution" and changed["video"]["scale_down"] == 1.0
    assert changed["opus"] == {"fec": True, "dtx": False}
    monkeypatch.setitem(app.config, "CALL_DEGRADATION_PREFERENCE", "fastest")  # unknown: the default
    assert services.call_settings(app.config)["video"]["degradation"] == "balanced"


def test_the_room_page_carries_the_settings_and_the_controller_address(app, world, monkeypatch):
    rural, _, consult = world
    monkeypatch.setitem(app.config, "CALL_ADAPT_MIN_KBPS", 222)
    client = app.test_client()
    login(client, rural)
    page = client.get(f"/consults/{consult.ref}/room").get_data(as_text=True)
    settings = json.loads(html.unescape(re.search(r'data-settings="([^"]*)"', page).group(1)))
    assert settings["adapt"]["min_kbps"] == 222 and settings["video"]["max_kbps"] == 350
    # call.js fetches the controller when the doctor joins, under its content-hashed URL.
    assert re.search(r'data-adapt-src="/static/js/adapt\.js\?v=[0-9a-f]+"', page)
    assert "/static/js/call.js?v=" in page and 'id="call-their-view"' in page


def test_the_automatic_switch_and_what_is_received_reach_the_other_doctor(app, world, joined):
    rural, specialist, consult = world
    a, b = joined(rural, consult.ref), joined(specialist, consult.ref)
    b.get_received("/call")
    state = {"muted": False, "camera": True, "audio_only": True, "auto_audio": True, "screen": False,
             "recv_height": 480, "recv_kbps": 310, "recv_audio_kbps": 32}
    assert a.emit("state", {"ref": consult.ref, **state}, namespace="/call", callback=True)["ok"]
    assert _events(b, "peer-state") == [{"user_id": rural.id, **state}]


@pytest.mark.parametrize("bad", [
    {"auto_audio": "yes"}, {"auto_audio": 1}, {"recv_height": -1}, {"recv_height": 10**9},
    {"recv_kbps": True}, {"recv_kbps": 3.5}, {"recv_audio_kbps": "32"}, {"recv_kbps": None},
])
def test_a_malformed_state_gets_an_error_ack_and_reaches_nobody(app, world, joined, bad):
    rural, specialist, consult = world
    a, b = joined(rural, consult.ref), joined(specialist, consult.ref)
    b.get_received("/call")
    ack = a.emit("state", {"ref": consult.ref, **bad}, namespace="/call", callback=True)
    assert ack["ok"] is False and ack["status"] == 422 and ack["message"]
    assert _events(b, "peer-state") == []
    assert a.emit("state", {"ref": consult.ref, "recv_height": 0}, namespace="/call", callback=True)["ok"]
