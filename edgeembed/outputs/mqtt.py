"""MQTT output in Home Assistant's conventions (paho-mqtt 2.x, the ``mqtt`` extra).

Topics, with ``prefix`` = --mqtt-topic and ``camera`` = --camera-name:

    <prefix>/<camera>/availability   "online" / "offline", retained; "offline" is also the last will, and is
                                     published while the camera is away (dropped, reconnecting)
    <prefix>/<camera>/state          JSON {"label", "score", "frame", "time"}, retained, on every change; in face
                                     mode also "faces" (faces in view) and "unknown" (how many of them no
                                     enrolled label holds), and a change of either is a change of state
    <prefix>/<camera>/event          JSON {"event": "appeared"|"left", "label", "frame", ...}; label null is an
                                     unknown face
    homeassistant/sensor/<prefix>_<camera>/config   retained discovery config of a "label" sensor

The client connects in the background (loop_start + reconnect_delay_set): a broker that is
down at start or goes away later never stops recognition; it is reconnected when it is back,
and availability and state are re-published on each connection. State and events go out at QoS 0:
a QoS 1 message published into a connection that died silently is queued by paho and re-sent on
reconnect, so an outage replayed a burst of old events and left an old retained state in place of
the current one. At QoS 0 what happened while the broker was away is not replayed, and the state
re-published on reconnect is the current one.

A broker that wants a login gets ``username``/``password`` (the command line takes the password from the
environment or a file, never from argv); ``mqtts://`` or ``tls`` verify the broker's certificate. A refused login or
certificate is logged once, naming the fix, and retried as a broker that is down is: at boot a broker still starting
refuses logins, and a Pi without a clock finds certificates not yet valid.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import sys
import threading
import time
from typing import Any

import numpy as np

from ..errors import InputError, require

DEFAULT_PORT = 1883
TLS_PORT = 8883
PASSWORD_ENV = "EDGEEMBED_MQTT_PASSWORD"
# CONNACK reasons that are about the login: the message names the options that give it
AUTH_REFUSALS = {134: "Bad user name or password", 135: "Not authorized", 140: "Bad authentication method"}
# The sensor's value: the label; else 'unknown' while a face no enrolled label holds is in view, 'none' for an empty
# scene. Image mode's state has no "unknown" count (its whole frame is never a face): no match still reads 'unknown'.
VALUE_TEMPLATE = ("{{ value_json.label if value_json.label is not none else "
                  "('unknown' if value_json.unknown | default(1) else 'none') }}")


def parse_broker(text: str, tls: bool = False) -> tuple[str, int, bool]:
    """'[mqtt://|mqtts://]HOST[:PORT]' -> (host, port, tls). mqtts:// (or ``tls``) is MQTT over TLS, whose port is
    8883 unless given; an IPv6 address with a port is written [ADDR]:PORT. A user or password in the address is
    refused: on the command line it would show in ``ps`` and in a world-readable systemd unit."""
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() not in ("mqtt", "mqtts"):
            raise InputError(f"--mqtt takes HOST[:PORT], mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS), got {text!r}")
        tls = tls or scheme.lower() == "mqtts"
        text = rest.rstrip("/")
    if "@" in text:
        raise InputError(f"--mqtt takes no user or password (they would show in ps and in the service file): give "
                         f"--mqtt-user NAME and the password in EDGEEMBED_MQTT_PASSWORD or --mqtt-password-file FILE, "
                         f"got {text.rpartition('@')[0].partition(':')[0]!r}@...")
    default = TLS_PORT if tls else DEFAULT_PORT
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", text) or re.fullmatch(r"([^:\s/]+)(?::(\d+))?", text)
    if m is None and text.count(":") >= 2 and re.fullmatch(r"[0-9A-Fa-f:.]+", text):
        return text, default, tls  # a bare IPv6 address
    if m is None:
        raise InputError(f"--mqtt must be HOST, HOST:PORT or [IPV6]:PORT with a numeric port, got {text!r}")
    port = int(m.group(2)) if m.group(2) else default
    if not 1 <= port <= 65535:
        raise InputError(f"--mqtt port must be 1..65535, got {port}")
    return m.group(1), port, tls


def read_password(password_file: str | None = None) -> str | None:
    """The broker password: the first line of ``password_file``, else $EDGEEMBED_MQTT_PASSWORD, else None. Never a
    command-line value (``ps`` shows those to every user of the machine)."""
    if password_file is None:
        return os.environ.get(PASSWORD_ENV) or None
    try:
        with open(password_file, encoding="utf-8") as f:
            line = f.readline().rstrip("\r\n")
    except FileNotFoundError:
        raise InputError(f"--mqtt-password-file {password_file}: no such file; write the password into it (its "
                         "first line) and give it to the user the service runs as only (chmod 600)") from None
    except PermissionError:
        raise InputError(f"--mqtt-password-file {password_file}: not readable by this user; chown it to the user "
                         "edgeembed runs as") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--mqtt-password-file {password_file}: cannot be read as text ({exc}); its first line "
                         "is the password") from None
    if not line:
        raise InputError(f"--mqtt-password-file {password_file}: its first line is empty; it must be the password")
    return line


def check_topic_prefix(prefix: str) -> str:
    """The --mqtt-topic prefix: MQTT's wildcards cannot be published to, so they are refused here, not ignored later."""
    p = prefix.strip("/")
    if not p or any(c in p for c in "+#\x00"):
        raise InputError(f"--mqtt-topic must be a topic prefix without + or # (e.g. home/cameras), got {prefix!r}")
    return p


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "camera"


def camera_topic(camera: str) -> str:
    """The camera's topic level. An ASCII name as it always was: letters, digits, - and _ kept, the rest '_'
    ("Front Door" -> Front_Door, "192.168.1.20" -> 192_168_1_20). A name with other letters keeps them (topics are
    UTF-8; only MQTT's reserved + # / and NUL, and spaces, become '_'): "Küche" stays Küche, where it was K_che, and
    "前门" and "后门" were both 'camera'."""
    if camera.isascii():
        return _slug(camera)
    return re.sub(r"[+#/\x00\s]+", "_", camera).strip("_") or "camera"


def camera_id(camera: str) -> str:
    """The camera in Home Assistant's discovery topic and unique_id, which take only A-Z a-z 0-9 _ -. An ASCII name
    as it always was; a name with other letters gets a short hash of itself, so that two such names ("前门", "后门";
    "Küche", "Kéche") stay two cameras instead of one entity whose state both overwrite."""
    if camera.isascii():
        return _slug(camera)
    return f"{_slug(camera)}_{hashlib.sha1(camera.encode()).hexdigest()[:6]}"


def _tls_context(ca_file: str | None, cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext:
    """Certificate and host name checked, against ``ca_file`` (PEM) or the system's CAs; with ``cert_file``, this
    client's own certificate (and ``key_file``, else the key in ``cert_file``) for a broker that asks for one."""
    what = {"--mqtt-ca": "the PEM certificate of the CA that signed the broker's (mosquitto.conf's cafile)",
            "--mqtt-cert": "this client's PEM certificate", "--mqtt-key": "the PEM key of this client's certificate"}
    for flag, path in (("--mqtt-ca", ca_file), ("--mqtt-cert", cert_file), ("--mqtt-key", key_file)):
        if path is not None and not os.path.isfile(path):
            raise InputError(f"{flag} {path}: no such file; give {what[flag]}")
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise InputError(f"--mqtt-ca {ca_file}: not a PEM certificate ({exc}); give the CA certificate that signed "
                         "the broker's (-----BEGIN CERTIFICATE----- ...)") from None
    if cert_file is not None:
        try:  # password b"": an encrypted key fails here instead of asking on a terminal a service does not have
            ctx.load_cert_chain(cert_file, key_file, password=b"")
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise InputError(f"--mqtt-cert {cert_file}{f' / --mqtt-key {key_file}' if key_file else ''}: not a "
                             f"certificate and its unencrypted key ({exc}); give the PEM certificate the broker's CA "
                             "signed and its key (openssl pkey -in KEY -out KEY.plain to remove a passphrase)") from None
    return ctx


def _seen(record: Any, m: Any) -> dict[str, Any]:
    """What the state reports, and a change of which republishes it: the label of ``m`` (the record's main track);
    in face mode also how many faces are in view and how many of them are unknown (a stranger at the door must not
    read like an empty porch)."""
    out: dict[str, Any] = {"label": m.label if m else None}
    if getattr(record, "face_mode", False):
        out.update(faces=record.present_faces, unknown=record.unknown_faces)
    return out


class MqttSink:
    """Publishes availability, state and events; survives the broker being down."""

    def __init__(self, broker: str, prefix: str = "edgeembed", camera: str = "camera", discovery: bool = True,
                 keepalive: int = 15, connect_wait: float = 3.0, log=None, username: str | None = None,
                 password: str | None = None, tls: bool = False, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None):
        """``username``/``password`` log in (a Home Assistant Mosquitto add-on takes no anonymous client); ``tls``
        (or an mqtts:// broker, or a ``ca_file``) verifies the broker's certificate against the system's CAs, or
        against ``ca_file`` for a broker with its own CA. A refused login or certificate is logged once and retried,
        as a broker that is down is."""
        mqtt = require("paho.mqtt.client", "mqtt", "MQTT output")
        self.host, self.port, tls = parse_broker(broker, tls or ca_file is not None or cert_file is not None)
        if key_file is not None and cert_file is None:
            raise InputError("--mqtt-key needs --mqtt-cert FILE (the certificate that goes with the key)")
        if password is not None and username is None:
            raise InputError(f"an MQTT password ({PASSWORD_ENV} or --mqtt-password-file) needs --mqtt-user NAME too")
        prefix = check_topic_prefix(prefix)
        self.base = f"{prefix}/{camera_topic(camera)}"
        self.topics = {k: f"{self.base}/{k}" for k in ("availability", "state", "event")}
        self.camera = camera
        self.prefix = prefix.strip("/")
        self.discovery = discovery
        self.username = username
        self.tls = tls
        self.log = log or (lambda msg: print(f"edgeembed: {msg}", file=sys.stderr, flush=True))
        self._state: dict[str, Any] | None = None
        self._last_frame: int | None = None  # the highest frame a frame or event named: the end state's
        self._source_away = False  # between a source_dropped and a source_resumed event
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self._closing = False
        self._republish = False
        self._was_connected = False
        self._first_try = threading.Event()
        self._warned_down = False
        self._last_refusal: str | None = None  # said once, not at every retry
        self.published = 0
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgeembed-{camera_id(camera)}-{id(self) & 0xffff:x}")
        if username is not None:
            client.username_pw_set(username, password)
        if tls:
            client.tls_set_context(_tls_context(ca_file, cert_file, key_file))
        self.client_cert = cert_file is not None
        client.will_set(self.topics["availability"], "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        self.client = client
        client.connect_async(self.host, self.port, keepalive=keepalive)
        client.loop_start()
        # give a reachable broker a moment, so the first events are not lost; a down broker costs no more
        answered = self._first_try.wait(connect_wait)
        if not answered and not self._warned_down:
            # no answer at all: a host that drops the packets (a firewall, a wrong address) is tried for longer
            self._warned_down = True
            tls_hint = "" if tls else ", or a TLS port that wants mqtts://"
            self.log(f"mqtt: no answer from broker {self.host}:{self.port} after {connect_wait:g} s (wrong address, "
                     f"or a firewall{tls_hint}?); recognition goes on and the connection is retried in the background")

    # -- connection
    def _where(self) -> str:
        return f"broker {self.host}:{self.port}{' (TLS)' if self.tls else ''}"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            code = getattr(reason, "value", None)
            if code in AUTH_REFUSALS:
                fix = (f"check --mqtt-user and the password ({PASSWORD_ENV} or --mqtt-password-file)"
                       if self.username is not None else
                       f"it wants a login: --mqtt-user NAME, with the password in {PASSWORD_ENV} or "
                       "--mqtt-password-file FILE")
                who = f"user {self.username!r}" if self.username is not None else "a client without a user"
                self._refuse(f"mqtt: {self._where()} refused {who} ({reason}); {fix}; retrying in the background")
            else:
                self._refuse(f"mqtt: {self._where()} refused the connection ({reason}); retrying in the background")
            self._first_try.set()
            return
        self._last_refusal = None
        self.connected.set()
        self._first_try.set()
        self._warned_down = False
        self.log(f"mqtt: connected to {self.host}:{self.port}{' (TLS)' if self.tls else ''}, publishing under {self.base}/")
        with self._lock:
            client.publish(self.topics["availability"], self._availability(), qos=1, retain=True)
        if self.discovery:
            client.publish(f"homeassistant/sensor/{_slug(self.prefix)}_{camera_id(self.camera)}/config",
                           json.dumps(self._discovery_config()), qos=1, retain=True)
        with self._lock:  # published under the lock: a newer state from on_frame cannot go out before it
            state = self._state
            # once more on the next frame or event, after anything an earlier connection that died still delivers
            self._republish = self._was_connected
            self._was_connected = True
            if state is not None:
                client.publish(self.topics["state"], json.dumps(state), qos=0, retain=True)

    def _refuse(self, message: str) -> None:
        """A refusal is said once, not at every retry (paho retries every few seconds), and retried: a wrong password
        and a broker still starting (Home Assistant's add-on asks Home Assistant, which may be restarting) look the
        same, and a certificate "not yet valid" on a Pi without a clock is valid once NTP has set it."""
        if message != self._last_refusal:
            self._last_refusal = message
            self.log(message)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if not self.connected.is_set() and self.tls and not getattr(self, "client_cert", False) and not self._closing:
            # TLS went through, then the broker hung up before MQTT's answer: what one that requires a client
            # certificate does (its alert is not passed on by paho)
            self._refuse(f"mqtt: {self._where()} closed the connection before answering; a broker that wants a client "
                         "certificate does this: --mqtt-cert FILE --mqtt-key FILE. Retrying in the background")
            self._first_try.set()
            return
        if self.connected.is_set():
            self.connected.clear()
            if self._closing:  # our own goodbye, not a lost broker
                return
            self.log(f"mqtt: lost broker {self.host}:{self.port} ({reason}); reconnecting in the background")

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        # paho calls this inside its ``except OSError``: the exception is the one being handled
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLError):
            if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in (9, 10):  # not yet valid, expired
                why = (f"its certificate is refused ({exc.verify_message}); is this machine's clock right (a Pi without "
                       "a clock has the time of its last shutdown until NTP sets it)? Renew an expired one")
            elif isinstance(exc, ssl.SSLCertVerificationError):
                why = (f"its certificate is not trusted ({exc.verify_message}): give the CA that signed it with "
                       "--mqtt-ca FILE, and the host name the certificate names")
            else:
                why = (f"the TLS handshake failed ({exc.reason or exc}): is {self.port} the broker's TLS port "
                       "(usually 8883)? Plain MQTT is --mqtt HOST without mqtts:// or --mqtt-tls")
            self._refuse(f"mqtt: {self._where()}: {why}; retrying in the background")
            self._first_try.set()
            return
        if self.tls and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            # what a plain MQTT port does with a TLS hello; a broker restarting could too, so it is retried
            self._refuse(f"mqtt: {self._where()} closed the connection in the TLS handshake: is {self.port} the "
                         "broker's TLS port (usually 8883)? Retrying in the background")
            self._first_try.set()
            return
        self._first_try.set()
        if not self._warned_down:
            self._warned_down = True
            self.log(f"mqtt: {self._where()} not reachable; recognition goes on and the connection "
                     "is retried in the background")

    def _discovery_config(self) -> dict:
        uid = f"edgeembed_{_slug(self.prefix)}_{camera_id(self.camera)}"
        return {"name": f"{self.camera} label", "unique_id": uid, "state_topic": self.topics["state"],
                "value_template": VALUE_TEMPLATE,
                "json_attributes_topic": self.topics["state"], "availability_topic": self.topics["availability"],
                "icon": "mdi:eye", "device": {"identifiers": [uid], "name": f"edgeembed {self.camera}",
                                              "manufacturer": "edgeembed"}}

    # -- sink
    def on_frame(self, record: Any, rgb: np.ndarray) -> None:
        m = record.main
        seen = _seen(record, m)
        with self._lock:
            self._last_frame = max(record.frame, self._last_frame or 0)
            old = self._state
            if old is not None and all(old.get(k) == v for k, v in seen.items()):
                self._republish_once()
                return
            self._state = {**seen, "score": round(m.score, 4) if m else None, "frame": record.frame,
                           "time": round(time.time(), 3), "camera": self.camera}
            self._publish("state", self._state, retain=True)

    def on_event(self, event: dict) -> None:
        kind = event.get("event")
        with self._lock:
            if isinstance(event.get("frame"), int):
                self._last_frame = max(event["frame"], self._last_frame or 0)
            if kind in ("source_dropped", "source_resumed"):
                # a camera that is away makes the sensor unavailable (Home Assistant greys it out) rather than
                # leaving the last label standing as if it were still seen; QoS 0 like the state, for the same reason
                self._source_away = kind == "source_dropped"
                if self.connected.is_set():
                    self.client.publish(self.topics["availability"], self._availability(), qos=0, retain=True)
            else:  # while the camera is away no frame comes, but its retries do
                self._republish_once()
        self._publish("event", {**event, "camera": self.camera, "time": round(time.time(), 3)})

    def _ended_state(self) -> dict | None:
        """The retained state once the run is over: nothing in view (None when it already says so)."""
        old = self._state
        if old is None or (old.get("label") is None and not old.get("faces")):
            return None
        cleared = {k: 0 for k in ("faces", "unknown") if k in old}
        frame = max(old.get("frame") or 0, self._last_frame or 0)  # after the run's last events, not before them
        return {**old, "label": None, "score": None, **cleared, "frame": frame, "time": round(time.time(), 3)}

    def _availability(self) -> str:
        return "offline" if self._source_away else "online"

    def _republish_once(self) -> None:
        """After a reconnect, the current availability and state once more (under the lock): a QoS 1 message paho
        queued in a connection that died silently is re-sent after the connect callback, over what it published."""
        if self._republish and self.connected.is_set():
            self._republish = False
            self.client.publish(self.topics["availability"], self._availability(), qos=0, retain=True)
            if self._state is not None:
                self.client.publish(self.topics["state"], json.dumps(self._state), qos=0, retain=True)

    def _publish(self, kind: str, payload: dict, retain: bool = False) -> None:
        if not self.connected.is_set():
            return  # retained state is re-published on connect; events while the broker is down are not replayed
        self.client.publish(self.topics[kind], json.dumps(payload), qos=0, retain=retain)
        self.published += 1

    def close(self) -> None:
        self._closing = True
        try:
            if self.connected.is_set():
                with self._lock:
                    ended = self._ended_state()
                if ended is not None:  # every label has left (reason end or source_lost): no retained label stays "seen"
                    self.client.publish(self.topics["state"], json.dumps(ended), qos=1, retain=True)
                info = self.client.publish(self.topics["availability"], "offline", qos=1, retain=True)
                info.wait_for_publish(timeout=2)
                self.client.disconnect()
        finally:
            self.client.loop_stop()
