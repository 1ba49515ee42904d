"""MQTT output against a real Mosquitto broker on 127.0.0.1, read by a real paho subscriber.

Needs the `mosquitto` binary (Debian package `mosquitto`) and, for the login and TLS tests, `mosquitto_passwd` and
`openssl`: the README's test command installs them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from conftest import run_cli
from test_live_support import (MjpegServer, Running, coil_segments, coil_view, door_clip, enroll_coil, free_port,
                               parse_jsonl, segments_of, write_clip)

MOSQUITTO = shutil.which("mosquitto") or (shutil.which("mosquitto", path="/usr/sbin:/sbin"))
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install -y mosquitto)")
mqtt = pytest.importorskip("paho.mqtt.client")


class Broker:
    def __init__(self, tmp_path, port: int, conf: str | None = None):
        """``conf``: a mosquitto.conf of one's own (its first listener on ``port``); else an anonymous one."""
        self.port = port
        self.conf = tmp_path / f"mosquitto-{port}.conf"
        self.conf.write_text(conf or f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        import socket

        end = time.monotonic() + 10
        while time.monotonic() < end:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class Subscriber:
    """A real paho client recording (topic, payload, retained) of everything under the given filters."""

    def __init__(self, port: int, *filters: str, login: tuple[str, str] | None = None):
        self.messages: list[tuple[str, str, bool]] = []
        self.ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}-{time.monotonic_ns()}")
        if login:
            c.username_pw_set(*login)
        c.on_connect = lambda cl, u, f, rc, p=None: ([cl.subscribe(t, qos=1) for t in filters], None)
        c.on_subscribe = lambda *a: self.ready.set()
        c.on_message = lambda cl, u, m: self.messages.append((m.topic, m.payload.decode(), bool(m.retain)))
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        assert self.ready.wait(10), "subscriber could not subscribe"

    def on(self, topic: str) -> list[str]:
        return [p for t, p, _ in list(self.messages) if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _stop_all(camera, proc, sub, broker) -> None:
    """A live test's clean-up: the camera, the recognizer if still running, the subscriber, the broker."""
    camera.stop()
    if proc.poll() is None:
        proc.kill()
    if sub:
        sub.close()
    broker.stop()


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    work = tmp_path_factory.mktemp("mqtt")
    enroll_coil(work / "g", ["obj01", "obj02", "obj04"], work)
    return work


def test_events_state_and_availability_reach_a_subscriber(gallery, tmp_path):
    broker = Broker(tmp_path, free_port()).start()
    sub = Subscriber(broker.port, "home/edge/#", "homeassistant/#")
    try:
        write_clip(tmp_path / "clip.avi", coil_segments(["obj01", "obj02", "obj04"]))
        p = run_cli("recognize", "--gallery", gallery / "g", "--source", tmp_path / "clip.avi", "--json",
                    "--mqtt", f"127.0.0.1:{broker.port}", "--mqtt-topic", "home/edge", "--camera-name", "porch")
        assert p.returncode == 0, p.stderr
        assert "lost broker" not in p.stderr  # our own disconnect at the end is not reported as a loss
        _, events = parse_jsonl(p.stdout)
        time.sleep(1.0)
        got = [json.loads(m) for m in sub.on("home/edge/porch/event")]
        assert [(e["event"], e["label"], e["frame"]) for e in got] == \
               [(e["event"], e["label"], e["frame"]) for e in events]
        assert [e["label"] for e in got if e["event"] == "appeared"] == ["obj01", "obj02", "obj04"]
        assert all(e["camera"] == "porch" for e in got)
        states = [json.loads(m)["label"] for m in sub.on("home/edge/porch/state")]
        assert states[:1] == [None] and [s for s in states if s] == ["obj01", "obj02", "obj04"]
        # image mode: no face counts in the state, and no unknown-face events
        assert not any({"faces", "unknown"} & set(json.loads(m)) for m in sub.on("home/edge/porch/state"))
        assert all(e["label"] is not None for e in got)
        assert sub.on("home/edge/porch/availability") == ["online", "offline"]
        # what Home Assistant finds when it (re)subscribes: retained availability, state and discovery
        late = Subscriber(broker.port, "home/edge/#", "homeassistant/#")
        time.sleep(0.5)
        retained = {t: p for t, p, r in late.messages if r}
        late.close()
        assert retained["home/edge/porch/availability"] == "offline"
        # the run is over and obj04 left with it: the retained state says nothing is in view, not obj04
        assert states[-2:] == ["obj04", None]
        assert json.loads(retained["home/edge/porch/state"])["label"] is None
        disc = json.loads(retained["homeassistant/sensor/home_edge_porch/config"])
        assert disc["state_topic"] == "home/edge/porch/state"
        assert disc["availability_topic"] == "home/edge/porch/availability"
    finally:
        sub.close()
        broker.stop()


def _sensor_value(template: str, state: dict) -> str | None:
    """What Home Assistant's sensor shows for a state, rendered with Jinja2 as Home Assistant does (None without it)."""
    try:
        import jinja2
    except ImportError:
        return None
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(value_json=state)


def test_home_assistant_sensor_tells_an_unknown_face_from_an_empty_scene():
    from edgeembed.outputs.mqtt import VALUE_TEMPLATE

    pytest.importorskip("jinja2")
    assert _sensor_value(VALUE_TEMPLATE, {"label": "s1", "faces": 2, "unknown": 1}) == "s1"
    assert _sensor_value(VALUE_TEMPLATE, {"label": None, "faces": 1, "unknown": 1}) == "unknown"
    assert _sensor_value(VALUE_TEMPLATE, {"label": None, "faces": 0, "unknown": 0}) == "none"
    assert _sensor_value(VALUE_TEMPLATE, {"label": None, "score": 0.6}) == "unknown"  # image mode: no match
    assert _sensor_value(VALUE_TEMPLATE, {"label": "obj01", "score": 0.9}) == "obj01"


def test_a_stranger_at_the_door_is_an_mqtt_event_and_state(tmp_path):
    """The audit's case, with the real face pipeline and a real broker: s1 (enrolled), nobody, a stranger, nobody.
    The stranger raised no event and left the state as an empty porch's; now one 'appeared'/'left' with label null
    go out, and the retained state counts the faces in view and the unknown ones, republished only when they change."""
    gallery, clip, truth = door_clip(tmp_path)
    broker = Broker(tmp_path, free_port()).start()
    sub = Subscriber(broker.port, "edgeembed/#", "homeassistant/#")
    try:
        p = run_cli("recognize", "--gallery", gallery, "--source", clip, "--mqtt", f"127.0.0.1:{broker.port}",
                    "--camera-name", "Front Door")
        assert p.returncode == 0, p.stderr
        time.sleep(1.0)
        events = [json.loads(m) for m in sub.on("edgeembed/Front_Door/event")]
        states = [json.loads(m) for m in sub.on("edgeembed/Front_Door/state")]
        late = Subscriber(broker.port, "edgeembed/#", "homeassistant/#")
        time.sleep(0.5)
        retained = {t: p for t, p, r in late.messages if r}
        late.close()
    finally:
        sub.close()
        broker.stop()
    window = 5  # --smooth's default
    (u0, u_end), = [(a, b) for a, b, who in segments_of(truth) if who == "stranger"]
    assert [(e["event"], e["label"]) for e in events] == \
           [("appeared", "s1"), ("left", "s1"), ("appeared", None), ("left", None)], events
    assert u0 <= events[2]["frame"] < u0 + window and u_end <= events[3]["frame"] < u_end + window
    assert [line.split(":")[1].split(" score")[0] for line in p.stdout.splitlines()] == \
           [" appeared s1", " left s1", " appeared unknown", " left unknown"], p.stdout
    # one state per change of label, faces or unknown, not one per frame
    assert [(s["label"], s["faces"], s["unknown"]) for s in states] == \
           [(None, 0, 0), ("s1", 1, 0), (None, 0, 0), (None, 1, 1), (None, 0, 0)], states
    stranger = states[3]
    assert u0 <= stranger["frame"] < u0 + window and stranger["camera"] == "Front Door"
    assert states[4]["frame"] == events[3]["frame"]
    final = json.loads(retained["edgeembed/Front_Door/state"])
    assert (final["label"], final["faces"], final["unknown"]) == (None, 0, 0)
    template = json.loads(retained["homeassistant/sensor/edgeembed_Front_Door/config"])["value_template"]
    shown = [_sensor_value(template, s) for s in states]
    assert shown in (["none", "s1", "none", "unknown", "none"], [None] * 5)


def test_broker_down_at_start_then_up(gallery, tmp_path):
    port = free_port()
    frames = [coil_view("obj01", v) for v in range(0, 72, 3)] + [coil_view("obj02", v) for v in range(0, 72, 3)]
    camera = MjpegServer(frames, fps=25).start()
    run = Running("recognize", "--gallery", gallery / "g", "--source", camera.url, "--json", "--max-frames", "330",
                  "--mqtt", f"127.0.0.1:{port}", "--camera-name", "door")
    broker = Broker(tmp_path, port)
    sub = None
    try:
        run.wait_for(lambda: run.frames() >= 25 and any("not reachable" in line for line in run.err))
        broker.start()  # recognition has been running without a broker; now it comes up
        sub = Subscriber(port, "edgeembed/door/#")
        run.wait_for(lambda: sub.on("edgeembed/door/availability")[:1] == ["online"], timeout=30)
        frames_when_connected = run.frames()
        rc = run.finish(timeout=60)
        time.sleep(0.5)
    finally:
        _stop_all(camera, run.proc, sub, broker)
    assert rc == 0, "".join(run.err)
    err = "".join(run.err)
    assert err.count("not reachable") == 1, "one line for a down broker, not one per retry"
    assert "mqtt: connected to 127.0.0.1" in err
    assert run.frames() == 330 and frames_when_connected > 25
    got = [json.loads(m) for m in sub.on("edgeembed/door/event")]
    assert any(e["event"] == "appeared" for e in got), f"no event arrived after the broker came up: {got}"
    assert sub.on("edgeembed/door/availability")[-1] == "offline"


def test_a_camera_that_goes_away_makes_the_sensor_unavailable_until_it_is_back(gallery, tmp_path):
    broker = Broker(tmp_path, free_port()).start()
    sub = Subscriber(broker.port, "edgeembed/yard/#")
    camera = MjpegServer([coil_view("obj01", v) for v in range(0, 72, 2)], fps=25).start()
    run = Running("recognize", "--gallery", gallery / "g", "--source", camera.url, "--json", "--max-frames", "120",
                  "--mqtt", f"127.0.0.1:{broker.port}", "--camera-name", "yard")
    availability = lambda: sub.on("edgeembed/yard/availability")  # noqa: E731
    try:
        run.wait_for(lambda: run.frames() >= 20 and availability() == ["online"])
        camera.stop()  # the camera goes away; recognition waits for it
        run.wait_for(lambda: availability() == ["online", "offline"], timeout=20)
        late = Subscriber(broker.port, "edgeembed/yard/availability")  # Home Assistant (re)subscribing meanwhile
        time.sleep(0.5)
        assert [(p, r) for _, p, r in late.messages] == [("offline", True)]
        late.close()
        camera.start()
        run.wait_for(lambda: availability() == ["online", "offline", "online"], timeout=30)
        rc = run.finish()
        time.sleep(0.5)
    finally:
        _stop_all(camera, run.proc, sub, broker)
    assert rc == 0, "".join(run.err)
    assert availability() == ["online", "offline", "online", "offline"]  # the last one: the run's end
    kinds = [json.loads(m)["event"] for m in sub.on("edgeembed/yard/event")]
    assert kinds.count("source_dropped") == 1 and kinds.count("source_resumed") == 1


def test_a_broker_that_froze_gets_the_current_state_and_no_replayed_events(tmp_path):
    """A network cut without FIN (here: the broker stopped with SIGSTOP) while recognition goes on. QoS 1 messages
    published into the dead connection were queued by paho and re-sent on reconnect: old events replayed, and an
    old retained state left in place of the current one. Now nothing is replayed and the retained state is current."""
    import signal

    from edgeembed.outputs.mqtt import MqttSink
    from edgeembed.pipeline import FrameRecord
    from edgeembed.smoothing import LabelSmoother, Track

    broker = Broker(tmp_path, free_port()).start()
    sub = Subscriber(broker.port, "t/c/#")
    sink = MqttSink(f"127.0.0.1:{broker.port}", prefix="t", camera="c", discovery=False, keepalive=1, log=lambda m: None)
    frame = 0

    def show(label, n=1):
        nonlocal frame
        for _ in range(n):
            frame += 1
            sink.on_frame(FrameRecord(frame, frame / 10, [Track(0, None, LabelSmoother(), label=label, score=0.9)], {}), None)
            time.sleep(0.05)

    try:
        assert sink.connected.wait(10)
        show("ann")
        sink.on_event({"event": "appeared", "label": "ann", "frame": frame})
        time.sleep(0.5)
        os_kill = __import__("os").kill
        os_kill(broker.proc.pid, signal.SIGSTOP)
        try:
            for label in ("bob", None, "bob", None):  # published into the dead connection
                show(label, 3)
                sink.on_event({"event": "appeared" if label else "left", "label": "bob", "frame": frame})
            deadline = time.monotonic() + 30
            while sink.connected.is_set() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not sink.connected.is_set(), "the dead connection was not noticed"
            show("cid")  # the current state while the broker is away
        finally:
            os_kill(broker.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while not sink.connected.is_set() and time.monotonic() < deadline:
            show("cid")
            time.sleep(0.2)
        assert sink.connected.is_set(), "no reconnection"
        show("cid", 5)
        time.sleep(1.0)
        late = Subscriber(broker.port, "t/c/state")
        time.sleep(0.5)
        retained = [json.loads(p) for t, p, r in late.messages if r]
        late.close()
        assert [s["label"] for s in retained] == ["cid"]
        events = [json.loads(p) for p in sub.on("t/c/event")]
        assert [e["label"] for e in events].count("ann") == 1
        assert len(events) <= 1 + 4  # the bob events may arrive once or be lost with the connection; never twice
        assert len({(e["event"], e["frame"]) for e in events}) == len(events)
    finally:
        sink.close()
        sub.close()
        broker.stop()


def test_availability_after_a_frozen_broker_is_the_cameras_current_one(tmp_path):
    """The camera drops while the link to the broker is dead without a FIN (broker SIGSTOPped), and is back before
    the link: the retained availability must end 'online', not a queued 'offline' re-sent after the reconnect."""
    import os
    import signal

    from edgeembed.outputs.mqtt import MqttSink
    from edgeembed.pipeline import FrameRecord
    from edgeembed.smoothing import LabelSmoother, Track

    broker = Broker(tmp_path, free_port()).start()
    sink = MqttSink(f"127.0.0.1:{broker.port}", prefix="t", camera="c", discovery=False, keepalive=1, log=lambda m: None)
    try:
        assert sink.connected.wait(10)
        time.sleep(0.3)
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            sink.on_event({"event": "source_dropped", "frame": 10})  # into the dead link
            deadline = time.monotonic() + 30
            while sink.connected.is_set() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not sink.connected.is_set(), "the dead link was not noticed"
            sink.on_event({"event": "source_resumed", "frame": 11})  # the camera is back; the broker is not
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while not sink.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.connected.is_set(), "no reconnection"
        time.sleep(1.0)  # whatever the dead link and paho's queue still deliver
        sink.on_frame(FrameRecord(12, 1.2, [Track(0, None, LabelSmoother(), label="ann", score=0.9)], {}), None)
        time.sleep(0.5)
        late = Subscriber(broker.port, "t/c/availability")
        time.sleep(0.5)
        retained = [p for _, p, r in late.messages if r]
        late.close()
        assert retained == ["online"]
    finally:
        sink.close()
        broker.stop()


def test_a_broker_address_that_never_answers_is_reported():
    """A host that takes the connection and never answers (as a firewall dropping packets holds it) was waited for
    without a word: one line now says so, and the sink goes on without it."""
    import socket

    from edgeembed.outputs.mqtt import MqttSink

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # the kernel completes the handshake; nothing ever answers MQTT's CONNECT
    lines = []
    try:
        sink = MqttSink(f"127.0.0.1:{silent.getsockname()[1]}", prefix="t", camera="c", discovery=False,
                        connect_wait=0.5, log=lines.append)
        assert len(lines) == 1 and "no answer from broker 127.0.0.1" in lines[0] and "recognition goes on" in lines[0]
        assert not sink.connected.is_set()
        sink.close()
    finally:
        silent.close()


def _stopping_run(gallery, tmp_path, camera_name: str, stop) -> tuple[Subscriber, list[dict], list[str]]:
    """obj01 in front of a live camera until ``stop(run)`` ends the run the way a user does; what MQTT got under
    the camera's topic, and what stdout printed."""
    from edgeembed.outputs.mqtt import camera_topic

    broker = Broker(tmp_path, free_port()).start()
    topic = f"edgeembed/{camera_topic(camera_name)}"
    sub = Subscriber(broker.port, f"{topic}/#", "homeassistant/#")
    camera = MjpegServer([coil_view("obj01", v) for v in range(0, 72, 2)], fps=25).start()
    run = Running("recognize", "--gallery", gallery / "g", "--source", camera.url, "--json",
                  "--mqtt", f"127.0.0.1:{broker.port}", "--camera-name", camera_name)
    try:
        run.wait_for(lambda: any('"appeared"' in line for line in run.out), timeout=60)
        stop(run)
        run.finish()
        time.sleep(0.5)
    finally:
        _stop_all(camera, run.proc, sub, broker)
    return sub, [json.loads(m) for m in sub.on(f"{topic}/event")], run.out


def test_a_systemd_stop_ends_the_run_with_reason_end_everywhere(gallery, tmp_path):
    """SIGTERM (systemctl stop) while obj01 is in view: it leaves with reason end on stdout and MQTT (the reason
    read "error", which the README does not name), the retained state is cleared at a frame after it, and every
    stdout line names the camera and its time. The camera's name keeps its letters in the topic, and Home
    Assistant's ids get a hash of it (two non-ASCII names made one entity)."""
    import signal

    sub, events, out = _stopping_run(gallery, tmp_path, "Küche", lambda run: run.proc.send_signal(signal.SIGTERM))
    lines = [json.loads(line) for line in out]
    assert all(r["camera"] == "Küche" and abs(r["time"] - time.time()) < 600 for r in lines)
    left = [e for e in lines if e.get("event") == "left"]
    assert [(e["label"], e["reason"]) for e in left] == [("obj01", "end")]
    assert [(e["event"], e["label"], e.get("reason")) for e in events] == [("appeared", "obj01", None),
                                                                           ("left", "obj01", "end")]
    states = [json.loads(m) for m in sub.on("edgeembed/Küche/state")]
    assert states[-1]["label"] is None and states[-1]["frame"] >= events[-1]["frame"]
    configs = [t for t, _, _ in sub.messages if t.startswith("homeassistant/")]
    assert configs and set(configs) == {"homeassistant/sensor/edgeembed_K_che_a5e641/config"}


def test_a_hangup_ends_the_run_as_a_stop_does(gallery, tmp_path):
    """SIGHUP (the terminal of an ssh session closed, or a HUP sent to reload) killed at once: no `left`, the retained
    state kept naming obj01 for good, and only the broker's last will said offline. It now ends like SIGTERM."""
    import signal

    sub, events, _ = _stopping_run(gallery, tmp_path, "door", lambda run: run.proc.send_signal(signal.SIGHUP))
    assert [(e["event"], e["label"], e.get("reason")) for e in events] == [("appeared", "obj01", None),
                                                                           ("left", "obj01", "end")]
    assert json.loads(sub.on("edgeembed/door/state")[-1])["label"] is None
    assert sub.on("edgeembed/door/availability")[-1] == "offline"


def test_a_consumer_closing_stdout_leaves_mqtt_its_end_of_run_events(gallery, tmp_path):
    """`recognize --json --mqtt ... | head`: the closed pipe ends the run, and MQTT still gets obj01's `left`
    (the failing stdout output kept every later output from the end-of-run events)."""
    import sys

    from conftest import REPO

    broker = Broker(tmp_path, free_port()).start()
    sub = Subscriber(broker.port, "edgeembed/porch/#")
    camera = MjpegServer([coil_view("obj01", v) for v in range(0, 72, 2)], fps=25).start()
    proc = subprocess.Popen([sys.executable, "-m", "edgeembed.cli", "recognize", "--gallery", str(gallery / "g"),
                             "--source", camera.url, "--json", "--mqtt", f"127.0.0.1:{broker.port}",
                             "--camera-name", "porch"], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        for line in proc.stdout:  # a consumer that reads until obj01 appears, then goes away (`| head`)
            if '"appeared"' in line:
                break
        proc.stdout.close()
        rc = proc.wait(timeout=60)
        err = proc.stderr.read()
        time.sleep(0.5)
    finally:
        _stop_all(camera, proc, sub, broker)
    assert rc == 0 and "Traceback" not in err, err
    events = [json.loads(m) for m in sub.on("edgeembed/porch/event")]
    assert [(e["event"], e["label"], e.get("reason")) for e in events] == [("appeared", "obj01", None),
                                                                           ("left", "obj01", "end")]


def test_camera_names_in_topics_and_home_assistant_ids():
    from edgeembed.outputs.mqtt import camera_id, camera_topic

    # ASCII names keep the topics and ids they always had (existing Home Assistant entities stay theirs)
    for name, slug in (("Front Door", "Front_Door"), ("192.168.1.20", "192_168_1_20"), ("a/b+c#", "a_b_c"),
                       ("garage-2", "garage-2"), ("", "camera")):
        assert camera_topic(name) == camera_id(name) == slug
    # other letters are kept in topics, and hashed into ids: two such cameras are two entities
    assert [camera_topic(n) for n in ("前门", "Küche", "Kü che/2")] == ["前门", "Küche", "Kü_che_2"]
    ids = {camera_id(n) for n in ("前门", "后门", "Küche", "Kéche")}
    assert len(ids) == 4 and all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids)


OPENSSL = shutil.which("openssl")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


@pytest.fixture(scope="module")
def locked_broker(tmp_path_factory):
    """A broker as Home Assistant's Mosquitto add-on keeps one: no anonymous clients, a user with a password; a plain
    listener and a TLS one whose certificate (for localhost) is signed by a CA of its own, made here with openssl."""
    if OPENSSL is None or MOSQUITTO_PASSWD is None:
        pytest.fail("openssl and mosquitto_passwd are needed (apt-get install -y openssl mosquitto)")
    d = tmp_path_factory.mktemp("locked")

    def openssl(*args):
        subprocess.run([OPENSSL, *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
            "-subj", "/CN=edgeembed test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "server.pem", "-days", "30", "-extfile", "san.cnf")
    subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(d / "passwd"), "ada", "two words"], check=True)
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "expired.pem", "-days", "-1", "-extfile", "san.cnf")  # valid until yesterday
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=edgeembed")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "client.pem", "-days", "30")
    plain, tls, expired, mutual = free_port(), free_port(), free_port(), free_port()
    # run as root, mosquitto drops to its own user, which cannot read pytest's private folders: it keeps root here
    broker = Broker(d, plain, ("user root\n" if os.geteuid() == 0 else "") + "per_listener_settings true\n" +
                              f"listener {plain} 127.0.0.1\nallow_anonymous false\npassword_file {d / 'passwd'}\n"
                              f"listener {tls} 127.0.0.1\nallow_anonymous false\npassword_file {d / 'passwd'}\n"
                              f"cafile {d / 'ca.pem'}\ncertfile {d / 'server.pem'}\nkeyfile {d / 'server.key'}\n"
                              f"listener {expired} 127.0.0.1\nallow_anonymous false\npassword_file {d / 'passwd'}\n"
                              f"cafile {d / 'ca.pem'}\ncertfile {d / 'expired.pem'}\nkeyfile {d / 'server.key'}\n"
                              f"listener {mutual} 127.0.0.1\nallow_anonymous false\npassword_file {d / 'passwd'}\n"
                              f"cafile {d / 'ca.pem'}\ncertfile {d / 'server.pem'}\nkeyfile {d / 'server.key'}\n"
                              "require_certificate true\npersistence false\n").start()
    broker.tls_port, broker.expired_port, broker.mutual_port, broker.dir = tls, expired, mutual, d
    yield broker
    broker.stop()


def test_a_broker_that_wants_a_login_and_tls_gets_them(gallery, locked_broker, tmp_path):
    """Home Assistant's Mosquitto add-on takes no anonymous client: edgeembed could not publish to it at all. The
    password comes from the environment or a file (never argv, which ps shows every user); TLS checks the broker's
    certificate against the CA given."""
    b = locked_broker
    sub = Subscriber(b.port, "edgeembed/porch/#", login=("ada", "two words"))
    write_clip(tmp_path / "clip.avi", coil_segments(["obj01", "obj02"]))
    (tmp_path / "pw").write_text("two words\n")
    try:
        runs = [run_cli("recognize", "--gallery", gallery / "g", "--source", tmp_path / "clip.avi", "--json",
                        "--mqtt", f"mqtts://localhost:{b.tls_port}", "--mqtt-ca", b.dir / "ca.pem",
                        "--mqtt-user", "ada", "--camera-name", "porch", env={"EDGEEMBED_MQTT_PASSWORD": "two words"}),
                run_cli("recognize", "--gallery", gallery / "g", "--source", tmp_path / "clip.avi", "--json",
                        "--mqtt", f"localhost:{b.port}", "--mqtt-user", "ada", "--mqtt-password-file", tmp_path / "pw",
                        "--camera-name", "porch")]
        time.sleep(1.0)
    finally:
        sub.close()
    for p in runs:
        assert p.returncode == 0, p.stderr
    assert f"connected to localhost:{b.tls_port} (TLS)" in runs[0].stderr
    assert f"connected to localhost:{b.port}," in runs[1].stderr
    appeared = [json.loads(m)["label"] for m in sub.on("edgeembed/porch/event") if json.loads(m)["event"] == "appeared"]
    assert appeared == ["obj01", "obj02"] * 2, "both runs' events reached the broker"
    assert sub.on("edgeembed/porch/availability") == ["online", "offline"] * 2


@pytest.mark.parametrize("case", ["CA not a certificate", "password in address", "user without --mqtt",
                                  "missing password file", "password without user"])
def test_a_login_given_wrongly_on_this_machine_is_one_line_and_exit_2(gallery, locked_broker, tmp_path, case):
    """What is wrong on this machine's side (and would be wrong on every retry) ends the run at once, naming the
    option that fixes it, before the first frame; the password never shows."""
    b = locked_broker
    write_clip(tmp_path / "clip.avi", coil_segments(["obj01"], step=8))
    opts, env, expect = {
        "CA not a certificate": ([f"localhost:{b.tls_port}", "--mqtt-ca", b.dir / "server.key", "--mqtt-user", "ada"], {},
                                 ["--mqtt-ca", "not a PEM certificate"]),
        "password in address": ([f"ada:two words@localhost:{b.port}"], {}, ["takes no user or password", "'ada'@..."]),
        "user without --mqtt": (None, {}, ["--mqtt-user is for the MQTT output: add --mqtt HOST[:PORT]"]),
        "missing password file": ([f"localhost:{b.port}", "--mqtt-user", "ada", "--mqtt-password-file",
                                   tmp_path / "nope"], {}, ["no such file"]),
        "password without user": ([f"localhost:{b.port}"], {"EDGEEMBED_MQTT_PASSWORD": "two words"},
                                  ["needs --mqtt-user NAME"]),
    }[case]
    args = ["--mqtt", *opts] if opts else ["--mqtt-user", "ada"]
    p = run_cli("recognize", "--gallery", gallery / "g", "--source", tmp_path / "clip.avi", "--json", *args,
                env={"EDGEEMBED_MQTT_PASSWORD": "", **env})
    assert p.returncode == 2, p.stderr
    assert p.stdout == "", "refused before the first frame"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeembed: error: "), p.stderr
    assert all(e in lines[0] for e in expect), lines[0]
    assert "two words" not in p.stderr


@pytest.mark.parametrize("case", ["no login", "wrong password", "untrusted certificate", "expired certificate"])
def test_a_login_or_certificate_the_broker_refuses_is_said_once_and_retried(gallery, locked_broker, tmp_path, case):
    """A refused login or certificate was logged at every retry with no hint. It is now one line naming the fix,
    and retried while recognition goes on: a wrong password looks the same as a broker still starting at boot
    (Home Assistant's add-on asks Home Assistant, which may be restarting), and a Pi without a clock finds a
    certificate not yet valid until NTP has set it; exiting would leave the service dead (exit 2 is not restarted)."""
    b = locked_broker
    write_clip(tmp_path / "clip.avi", coil_segments(["obj01", "obj02", "obj01", "obj02"], step=1))  # ~4 s: retries
    (tmp_path / "pw").write_text("wrong\n")
    opts, env, expect = {
        "no login": ([f"localhost:{b.port}"], {}, ["refused a client without a user", "--mqtt-user NAME"]),
        "wrong password": ([f"localhost:{b.port}", "--mqtt-user", "ada", "--mqtt-password-file", tmp_path / "pw"], {},
                           ["refused user 'ada'", "check --mqtt-user and the password"]),
        "untrusted certificate": ([f"mqtts://localhost:{b.tls_port}", "--mqtt-user", "ada"],
                                  {"EDGEEMBED_MQTT_PASSWORD": "two words"}, ["certificate is not trusted", "--mqtt-ca FILE"]),
        "expired certificate": ([f"mqtts://localhost:{b.expired_port}", "--mqtt-ca", b.dir / "ca.pem", "--mqtt-user", "ada"],
                                {"EDGEEMBED_MQTT_PASSWORD": "two words"}, ["certificate has expired", "clock right"]),
    }[case]
    p = run_cli("recognize", "--gallery", gallery / "g", "--source", tmp_path / "clip.avi", "--json",
                "--mqtt", *opts, env={"EDGEEMBED_MQTT_PASSWORD": "", **env})
    assert p.returncode == 0, p.stderr
    rows, events = parse_jsonl(p.stdout)
    assert len(rows) == 4 * 72 and [e["label"] for e in events if e["event"] == "appeared"] == ["obj01", "obj02"] * 2
    said = [line for line in p.stderr.splitlines() if "retrying in the background" in line]
    assert len(said) == 1 and all(e in said[0] for e in expect), p.stderr
    assert "two words" not in p.stderr


def test_a_plain_client_at_a_tls_port_and_the_other_way_round_are_told_which_port(locked_broker):
    """Neither side's mistake gets an answer a retry can't change for sure (a broker restarting resets too), so both
    keep trying; what they say names the TLS port."""
    from edgeembed.outputs.mqtt import MqttSink

    b = locked_broker
    for broker, ca, expect in ((f"localhost:{b.tls_port}", None, "or a TLS port that wants mqtts://"),
                               (f"mqtts://localhost:{b.port}", str(b.dir / "ca.pem"), "closed the connection in the TLS handshake")):
        lines: list[str] = []
        sink = MqttSink(broker, prefix="t", camera="c", discovery=False, connect_wait=1.0, log=lines.append,
                        username="ada", password="two words", ca_file=ca)
        try:
            time.sleep(2.5)  # paho retries after 1 s, then 2 s: the line is said once
            assert not sink.connected.is_set()
            assert len(lines) == 1 and expect in lines[0], lines
        finally:
            sink.close()


def test_a_password_changed_while_running_is_said_once_and_retried(tmp_path):
    """After a first connection, a refusal is no reason to stop recognition (the user may be fixing the broker):
    one line, not one per retry, and the sink connects again once the password is right again."""
    from edgeembed.outputs.mqtt import MqttSink

    assert MOSQUITTO_PASSWD, "mosquitto_passwd is needed (apt-get install -y mosquitto)"
    port = free_port()
    conf = (("user root\n" if os.geteuid() == 0 else "") +
            f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {tmp_path / 'passwd'}\npersistence false\n")
    subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(tmp_path / "passwd"), "ada", "two words"], check=True)
    broker = Broker(tmp_path, port, conf).start()
    lines: list[str] = []
    sink = MqttSink(f"localhost:{port}", prefix="t", camera="c", discovery=False, log=lines.append,
                    username="ada", password="two words")
    try:
        assert sink.connected.is_set()
        broker.stop()
        subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(tmp_path / "passwd"), "ada", "changed"], check=True)
        broker.start()
        time.sleep(8)  # paho's retries: 1, 2, 4 s apart
        refusals = [line for line in lines if "refused user 'ada'" in line]
        assert len(refusals) == 1 and not sink.connected.is_set(), lines
        broker.stop()
        subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(tmp_path / "passwd"), "ada", "two words"], check=True)
        broker.start()
        assert sink.connected.wait(20), lines
    finally:
        sink.close()
        broker.stop()


def test_a_broker_that_requires_a_client_certificate_gets_one(gallery, locked_broker, tmp_path):
    """mosquitto's require_certificate: --mqtt-cert/--mqtt-key give this client's certificate. Without one the broker
    hangs up after the handshake, which read as "no answer ... (a firewall?)"; it now names the options."""
    b = locked_broker
    write_clip(tmp_path / "clip.avi", coil_segments(["obj01"], step=4))
    common = ["recognize", "--gallery", gallery / "g", "--source", tmp_path / "clip.avi", "--json", "--mqtt",
              f"mqtts://localhost:{b.mutual_port}", "--mqtt-ca", b.dir / "ca.pem", "--mqtt-user", "ada"]
    env = {"EDGEEMBED_MQTT_PASSWORD": "two words"}
    sub = Subscriber(b.port, "edgeembed/camera/#", login=("ada", "two words"))
    try:
        p = run_cli(*common, "--mqtt-cert", b.dir / "client.pem", "--mqtt-key", b.dir / "client.key", env=env)
        time.sleep(1.0)
    finally:
        sub.close()
    assert p.returncode == 0 and f"connected to localhost:{b.mutual_port} (TLS)" in p.stderr, p.stderr
    assert [json.loads(m)["label"] for m in sub.on("edgeembed/camera/event")] == ["obj01", "obj01"]  # appeared, left
    p = run_cli(*common, env=env)
    said = [line for line in p.stderr.splitlines() if "mqtt:" in line]
    assert p.returncode == 0 and len(said) == 1 and "--mqtt-cert FILE --mqtt-key FILE" in said[0], p.stderr
    for args, expect in (([b.dir / "client.key"], "not a certificate and its unencrypted key"),  # a key as the cert
                         ([b.dir / "nope.pem"], "--mqtt-cert " + str(b.dir / "nope.pem") + ": no such file")):
        p = run_cli(*common, "--mqtt-cert", *args, env=env)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and expect in p.stderr, p.stderr
