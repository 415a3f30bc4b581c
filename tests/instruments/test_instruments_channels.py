"""The production driver path against simulated devices over TCP socket, pty and in-process."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from cryoopt.exceptions import ParameterError
from cryoopt.instruments import StainStep, connect, open_bench
from cryoopt.instruments.simulated import SimulatedUltramicrotome, SocketServer

CHANNELS = ["socket", pytest.param("pty", marks=pytest.mark.skipif(sys.platform == "win32", reason="no pty")),
            "inprocess"]
STEPS = [StainStep("BLOCK", dilution=1, volume_ul=200, time_min=10),
         StainStep("PRIMARY", dilution=200, volume_ul=100, time_min=30, temperature_c=37, wash_cycles=2)]


@pytest.mark.parametrize("channel", CHANNELS)
def test_ultramicrotome_over_channel(channel):
    with connect("ultramicrotome-ref", simulated=channel, seed=3, timeout_s=1.0) as um:
        assert "REFCUT-1" in um.idn
        um.section_thickness_nm = 70
        um.cutting_speed_mm_s = 1.2
        um.mode = "SECT"
        assert um.section_thickness_nm == 70
        assert um.cut(4) == 4
        assert um.knife_wear == 4
        um.knife_position_um = 600  # fresh edge segment
        assert um.knife_wear == 0
        assert um.state == "IDLE"
        with pytest.raises(ParameterError):
            um.section_thickness_nm = 2
        assert "SECT:THIC 2" not in um.simulated_device.received


@pytest.mark.parametrize("channel", CHANNELS)
def test_stainer_over_channel(channel):
    with connect("stainer-ref", simulated=channel, seed=3, timeout_s=1.0) as st:
        st.load_protocol(STEPS)
        assert st.step_count == 2
        before = st.reagent_levels()
        st.run()
        assert st.state == "DONE" and st.progress == 1.0
        after = st.reagent_levels()
        assert before["PRIMARY"] - after["PRIMARY"] == 100
        assert before["PBS"] - after["PBS"] == 200


@pytest.mark.parametrize("channel", CHANNELS)
def test_microscope_over_channel(channel):
    with connect("microscope-ref", simulated=channel, seed=3, timeout_s=1.0) as mic:
        mic.image_size_px = 64
        mic.modality = "EM"
        assert mic.channel == "SE"
        img = mic.acquire()
        assert img.array.shape == (64, 64) and img.array.dtype == np.uint16
        assert img.metadata["modality"] == "EM" and img.metadata["pixel_size_nm"] == 2.0


def test_same_bytes_same_images_on_every_channel():
    images = []
    for channel in ("socket", "pty", "inprocess"):
        with connect("microscope-ref", simulated=channel, seed=11) as mic:
            mic.image_size_px = 32
            images.append(mic.acquire().array)
    np.testing.assert_array_equal(images[0], images[1])
    np.testing.assert_array_equal(images[0], images[2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bench_is_deterministic_per_seed(seed):
    def run():
        with open_bench(seed=seed) as bench:
            bench.ultramicrotome.cut(2)
            bench.stainer.load_protocol(STEPS)
            bench.stainer.run()
            return bench.microscope.acquire().array, dict(bench.tray.latest())

    (a1, f1), (a2, f2) = run(), run()
    np.testing.assert_array_equal(a1, a2)
    assert f1 == f2 and f1["stained"] and 0 <= f1["quality"] <= 1


def test_socket_server_stops_and_survives_reconnects():
    dev = SimulatedUltramicrotome(seed=0)
    before = {t.name for t in threading.enumerate()}
    server = SocketServer(dev)
    assert server.address.startswith("socket://127.0.0.1:")
    for _ in range(2):
        with connect("ultramicrotome-ref", server.address) as um:
            um.section_thickness_nm = 90
    assert server.connections == 2 and dev.settings["section_thickness_nm"] == 90
    server.close()
    assert not server.running
    assert {t.name for t in threading.enumerate()} <= before | {"MainThread"}


def test_driver_owns_and_stops_its_server():
    um = connect("ultramicrotome-ref", simulated="socket")
    server = um._owned[0]
    assert server.running
    um.close()
    assert not server.running


def test_loop_url_transport_is_accepted():
    # loop:// echoes what is written: the driver sees its own command as the reply.
    with connect("ultramicrotome-ref", "loop://", timeout_s=0.2, check_identity=False) as um:
        assert um.query("STAT?") == "STAT?"
