"""SIP phones and the PSTN for the real-PBX tier, played by SIPp (Debian package `sip-tester`).

Scenarios are generated here from a few behaviours (answer after N ms, hang up after M ms, key
DTMF, refuse busy…), so each test says what its phones do in one line. Every scenario also
answers the requests a real phone gets outside any call (Asterisk's qualify OPTIONS) and inside
one (re-INVITE / UPDATE for connected-line updates), so the shipped pjsip.conf runs unchanged.

Facts that shape this module (seen on Asterisk 22.10.1):
- agents' endpoints have `rewrite_contact = yes`: Asterisk records where the REGISTER came from,
  not its Contact header, so a phone registers from the very port it then listens on (the
  short registration run ends before the answering process binds the same port);
- DTMF is RFC 4733 (`dtmf_mode = rfc4733`), played from the pcaps shipped with sip-tester,
  sent from the media port advertised in our SDP (strict RTP accepts it at once).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab import free_port

SIPP = shutil.which("sipp") or "/usr/bin/sipp"

AUTH_LINE = "[authentication]\n"
HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'

SDP = """v=0
o=cti-tier 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8 0 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=sendrecv"""


VIA = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"


def _ack(uri: str, cseq: int, routes: bool = False) -> str:
    route = "[routes]\n" if routes else ""
    return (
        f"  <send><![CDATA[\nACK {uri} SIP/2.0\n{VIA}\n[last_From:]\n[last_To:]\n{route}[last_Call-ID:]\n"
        f"CSeq: {cseq} ACK\nMax-Forwards: 70\nContent-Length: 0\n]]></send>\n"
    )


def _response(code: str, *, sdp: bool = False, tag: bool = True, cseq: str = "[last_CSeq:]") -> str:
    to = "[last_To:];tag=[pid]SIPpTag01[call_number]" if tag else "[last_To:]"
    body = (
        f"\nContent-Type: application/sdp\nContent-Length: [len]\n\n{SDP}" if sdp else "\nContent-Length: 0\n"
    )
    return f"""  <send><![CDATA[
SIP/2.0 {code}
[last_Via:]
[last_From:]
{to}
[last_Call-ID:]
{cseq}
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Server: cti-tier-sipp{body}
]]></send>
"""


DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}


def _ipv4_udp(payload: bytes, sport: int = 6000, dport: int = 6000) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))  # fmt: skip
    words = struct.unpack("!10H", header)
    total = sum(words)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    return b"\x00" * 12 + b"\x08\x00" + header + udp


def dtmf_pcap(keys: str, path: Path, tone_ms: int = 200, gap_ms: int = 250) -> Path:
    """One RFC 4733 stream keying `keys` ("," = one second of silence), as a pcap SIPp replays.

    One stream per call, not one pcap per key: each of sip-tester's dtmf_2833_N.pcap carries the
    same RTP timestamp, and Asterisk takes a second event with the timestamp of the previous one
    for a retransmission of it (only the first key of "1,1,1" was heard)."""
    packets: list[tuple[float, bytes]] = []
    seq, at_ms = 1000, 0.0
    ssrc = 0x0C71E5A5
    for key in keys:
        if key == ",":
            at_ms += 1000
            continue
        event, start_ts = DTMF_EVENTS[key], int(at_ms * 8)
        for i, step in enumerate(range(20, tone_ms + 1, 20)):
            rtp = struct.pack("!BBHII", 0x80, (0x80 if i == 0 else 0) | 101, seq, start_ts, ssrc)
            packets.append((at_ms + step - 20, rtp + struct.pack("!BBH", event, 10, step * 8)))
            seq += 1
        for repeat in range(3):  # the end packet, three times as RFC 4733 asks
            rtp = struct.pack("!BBHII", 0x80, 101, seq, start_ts, ssrc)
            packets.append(
                (at_ms + tone_ms + repeat * 20, rtp + struct.pack("!BBH", event, 0x80 | 10, tone_ms * 8))
            )
            seq += 1
        at_ms += tone_ms + 60 + gap_ms
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for when_ms, rtp in packets:
        frame = _ipv4_udp(rtp)
        seconds = 1_800_000_000 + when_ms / 1000
        out += struct.pack("<IIII", int(seconds), int((seconds % 1) * 1_000_000), len(frame), len(frame))
        out += frame
    path.write_bytes(bytes(out))
    return path


class _InCall:
    """The part of a scenario after the call is up, as a series of steps.

    Every wait is a receive, so that at any moment a BYE ends the call and a re-INVITE or
    UPDATE (Asterisk's connected-line updates) is answered and the wait goes on.
    Requests we send ourselves (BYE) name the dialog from variables captured when it was set up,
    not from the last message received, which may be one of Asterisk's in-dialog requests."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.main: list[str] = []
        self.handlers: list[str] = []
        self.count = 0

    def wait(self, ms: int | None) -> None:
        """Wait `ms` (None: until the other side hangs up). One receive with a timeout, never a
        loop of short ones: SIPp takes a request that arrives while it steps through a <nop>
        for an unexpected message and drops the call (seen: a re-INVITE during an attended
        transfer). A re-INVITE or UPDATE is answered and the wait starts over (a little longer
        than asked, which no scenario minds)."""
        self.count += 1
        n = self.count
        loop, done, reinvite, update = f"w{n}", f"w{n}end", f"w{n}inv", f"w{n}upd"
        timeout = f' timeout="{ms}" ontimeout="{done}"' if ms is not None else ""
        self.main.append(
            f'  <label id="{loop}"/>\n'
            f'  <recv request="INVITE" optional="true" next="{reinvite}"{timeout}/>\n'
            f'  <recv request="UPDATE" optional="true" next="{update}"/>\n'
            '  <recv request="BYE" next="gotbye"/>\n'
            f'  <label id="{done}"/>\n'
        )
        self.handlers.append(
            f'  <label id="{reinvite}"/>\n'
            + _response("200 OK", sdp=True, tag=False)
            + f'  <recv request="ACK" next="{loop}"/>\n'
            f'  <label id="{update}"/>\n' + _response("200 OK", tag=False) + f'  <nop next="{loop}"/>\n'
        )

    def keys(self, keys: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pcap = dtmf_pcap(keys, self.workdir / f"dtmf-{abs(hash(keys)):x}.pcap")
        self.main.append(f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n')
        self.wait(sum(1000 if k == "," else 510 for k in keys))

    def hang_up(self, bye_cseq: int, me: str) -> None:
        self.main.append(
            '  <send retrans="500"><![CDATA[\n'
            "BYE [$target] SIP/2.0\n"
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
            f"From: {me}\nTo: [$peer]\nCall-ID: [call_id]\n"
            f"CSeq: {bye_cseq} BYE\nMax-Forwards: 70\nContent-Length: 0\n"
            "]]></send>\n"
            '  <recv response="200" next="done"/>\n'
        )

    def render(self) -> str:
        return (
            "".join(self.main)
            + '  <nop next="done"/>\n'
            + '  <label id="gotbye"/>\n'
            + _response("200 OK", tag=False)
            + '  <nop next="done"/>\n'
            + "".join(self.handlers)
        )


def _talk(
    hangup_after_ms: int | None, dtmf: str, dtmf_delay_ms: int, workdir: Path, bye_cseq: int, me: str
) -> str:
    """After the call is up: optional DTMF, then hang up ourselves or wait for the other side."""
    steps = _InCall(workdir)
    if dtmf:
        steps.wait(dtmf_delay_ms)
        steps.keys(dtmf)
    steps.wait(hangup_after_ms)
    if hangup_after_ms is not None:
        steps.hang_up(bye_cseq, me)
    return steps.render()


def register_scenario(user: str, expires: int = 3600) -> str:
    request = f"""REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{user}@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{user}@[remote_ip]>
Call-ID: [call_id]
CSeq: {{cseq}} REGISTER
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70
Expires: {expires}
User-Agent: cti-tier-sipp
{{auth}}Content-Length: 0
"""
    return (
        HEAD
        + '<scenario name="register">\n'
        + f'  <send retrans="500"><![CDATA[\n{request.format(cseq=1, auth="")}]]></send>\n'
        + '  <recv response="401" auth="true"/>\n'
        + f'  <send retrans="500"><![CDATA[\n{request.format(cseq=2, auth=AUTH_LINE)}]]></send>\n'
        + '  <recv response="200"/>\n'
        # Asterisk qualifies a new contact at once: stay bound to answer that OPTIONS (an
        # out-of-call request, answered by `options_scenario` given as -oocsf).
        + '  <pause milliseconds="700"/>\n'
        + "</scenario>\n"
    )


def options_scenario() -> str:
    """Out-of-call requests while registering: answer the qualify OPTIONS."""
    return (
        HEAD
        + '<scenario name="out-of-call">\n'
        + '  <recv request="OPTIONS"/>\n'
        + _response("200 OK")
        + "</scenario>\n"
    )


@dataclass(frozen=True)
class Answer:
    """What a called phone (an agent, or the PSTN behind the trunk) does with each call."""

    ring_ms: int = 300  # 180 Ringing, then this long before answering
    hangup_after_ms: int | None = None  # None: wait for the other side's BYE
    dtmf: str = ""  # keys to press once answered ("," = one second of silence)
    dtmf_delay_ms: int = 800
    refuse: str | None = None  # "486 Busy Here", "503 Service Unavailable": never answer
    never_answer: bool = False  # ring until CANCEL (no answer)
    # Honour an auto-answer request as softphones set up for it do: an INVITE carrying
    # `Call-Info: <...>;answer-after=0` is answered at once, any other after ring_ms.
    auto_answer: bool = False


def uas_scenario(answer: Answer, workdir: Path) -> str:
    parts = [HEAD, '<scenario name="uas">\n']
    parts.append('  <recv request="OPTIONS" optional="true" next="options"/>\n')
    parts.append('  <recv request="INVITE" crlf="true">\n')
    captures = [
        '<ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="invcseq"/>',
        '<ereg regexp=".*" search_in="hdr" header="From:" assign_to="peer"/>',
        '<ereg regexp=".*" search_in="hdr" header="To:" assign_to="me0"/>',
        '<ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" assign_to="target"/>',
    ]
    if answer.auto_answer:
        captures.append(
            '<ereg regexp="answer-after=0" search_in="hdr" header="Call-Info:" check_it="false"'
            ' assign_to="autoanswer"/>'
        )
    # SIPp refuses a scenario that sets a variable it never reads ("Variable $x is referenced
    # 1 times!"): a refusal reads none, a phone that never answers only the CSeq (its 487).
    if answer.refuse:
        captures = []
    elif answer.never_answer:
        captures = captures[:1]
    parts.append("    <action>" + "".join(captures) + "</action>\n")
    parts.append("  </recv>\n")
    parts.append(_response("100 Trying", tag=False))
    if answer.refuse:
        parts.append(_response(answer.refuse))
        parts.append('  <recv request="ACK" next="done"/>\n')
    else:
        parts.append(_response("180 Ringing"))
        if answer.never_answer:
            parts.append('  <recv request="CANCEL"/>\n')
            parts.append(_response("200 OK"))
            parts.append(_response("487 Request Terminated", cseq="CSeq: [$invcseq] INVITE"))
            parts.append('  <recv request="ACK" next="done"/>\n')
        else:
            if answer.auto_answer:
                parts.append('  <nop test="autoanswer" next="answer"/>\n')
            parts.append(
                f'  <recv request="CANCEL" next="cancelled" timeout="{answer.ring_ms}" ontimeout="answer"/>\n'
            )
            parts.append('  <label id="answer"/>\n')
            parts.append(
                '  <nop><action><assignstr assign_to="me" value="[$me0];tag=[pid]SIPpTag01[call_number]"/>'
                '<log message="dialog [$me] [$peer] [$target]"/></action></nop>\n'
            )
            parts.append(_response("200 OK", sdp=True))
            parts.append('  <recv request="ACK"/>\n')
            parts.append(
                _talk(answer.hangup_after_ms, answer.dtmf, answer.dtmf_delay_ms, workdir, 1, "[$me]")
            )
            parts.append('  <label id="cancelled"/>\n')
            parts.append(_response("200 OK"))
            parts.append(_response("487 Request Terminated", cseq="CSeq: [$invcseq] INVITE"))
            parts.append('  <recv request="ACK" next="done"/>\n')
    parts.append('  <label id="options"/>\n')
    parts.append(_response("200 OK"))
    parts.append('  <label id="done"/>\n')
    parts.append("</scenario>\n")
    return "".join(parts)


@dataclass(frozen=True)
class Dial:
    """An outgoing call: a customer calling in through the trunk, or an agent keying a code."""

    to: str  # the Request-URI user: a DID, "*41", "7000"…
    caller: str = "0612345678"
    caller_name: str = ""
    dtmf: str = ""  # keys once answered ("," = one second)
    dtmf_delay_ms: int = 800
    hangup_after_ms: int | None = None  # None: wait for Asterisk's BYE


def uac_scenario(dial: Dial, auth: bool, workdir: Path) -> str:
    name = f'"{dial.caller_name}" ' if dial.caller_name else ""
    request_uri = f"sip:{dial.to}@[remote_ip]:[remote_port]"
    from_value = f"{name}<sip:{dial.caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]"
    invite = f"""INVITE sip:{dial.to}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: {from_value}
To: <sip:{dial.to}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: {{cseq}} INVITE
Contact: <sip:{dial.caller}@[local_ip]:[local_port]>
Max-Forwards: 70
User-Agent: cti-tier-sipp
{{auth}}Content-Type: application/sdp
Content-Length: [len]

{SDP}
"""
    parts = [HEAD, '<scenario name="uac">\n']
    parts.append(f'  <send retrans="500"><![CDATA[\n{invite.format(cseq=1, auth="")}]]></send>\n')
    if auth:
        parts.append('  <recv response="100" optional="true"/>\n')
        parts.append('  <recv response="401" auth="true"/>\n')
        parts.append(_ack(request_uri, 1))
        parts.append(f'  <send retrans="500"><![CDATA[\n{invite.format(cseq=2, auth=AUTH_LINE)}]]></send>\n')
    cseq = 2 if auth else 1
    parts.append('  <recv response="100" optional="true"/>\n')
    parts.append('  <recv response="180" optional="true"/>\n')
    parts.append('  <recv response="183" optional="true"/>\n')
    for code in ("403", "404", "480", "486", "487", "503", "603"):
        parts.append(f'  <recv response="{code}" optional="true" next="failed"/>\n')
    parts.append('  <recv response="200" rrs="true" next="up">\n')
    parts.append(
        '    <action><ereg regexp=".*" search_in="hdr" header="To:" assign_to="peer"/>'
        '<ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" assign_to="target"/>'
        '<log message="dialog [$peer] [$target]"/></action>\n'
    )
    parts.append("  </recv>\n")
    # A final refusal ends the call with an ACK (a refused code, a busy agent…).
    parts.append('  <label id="failed"/>\n')
    parts.append(_ack(request_uri, cseq))
    parts.append('  <nop next="done"/>\n')
    parts.append('  <label id="up"/>\n')
    parts.append(_ack("[next_url]", cseq, routes=True))
    parts.append(_talk(dial.hangup_after_ms, dial.dtmf, dial.dtmf_delay_ms, workdir, cseq + 1, from_value))
    parts.append('  <label id="done"/>\n')
    parts.append("</scenario>\n")
    return "".join(parts)


@dataclass
class Sipp:
    """One SIPp process; its logs stay in `workdir` for the test's artefacts."""

    name: str
    args: list[str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sipp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"{self.name}.out", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [SIPP, *self.args],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(3)

    def errors(self) -> str:
        found = []
        for path in sorted(self.workdir.glob(f"{self.name}*errors*")) + sorted(
            self.workdir.glob(f"{self.name}.out")
        ):
            found.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(found)


@dataclass
class SipLab:
    """Phones and trunk around one Asterisk (`sip_port` on 127.0.0.1)."""

    sip_port: int
    workdir: Path
    processes: list[Sipp] = field(default_factory=list)
    counter: int = 0
    pstn: Sipp | None = None

    def _write(self, name: str, scenario: str) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f"{name}.xml"
        path.write_text(scenario, encoding="iso-8859-1")
        return path

    def _common(self, name: str, scenario: str, port: int) -> list[str]:
        path = self._write(name, scenario)
        media = free_port()
        return [
            f"127.0.0.1:{self.sip_port}",
            "-sf",
            str(path),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-mi",
            "127.0.0.1",
            "-mp",
            str(media),
            "-t",
            "u1",
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(self.workdir / f"{name}.errors.log"),
            "-trace_msg",
            "-message_file",
            str(self.workdir / f"{name}.messages.log"),
        ]

    def _name(self, stem: str) -> str:
        self.counter += 1
        return f"{self.counter:02d}-{stem}"

    def register(self, user: str, password: str, port: int) -> None:
        name = self._name(f"register-{user}")
        run = Sipp(
            name,
            [
                *self._common(name, register_scenario(user), port),
                *("-oocsf", str(self._write(f"{name}-ooc", options_scenario()))),
                *("-au", user, "-ap", password, "-m", "1"),
            ],
            self.workdir,
        ).start()
        code = run.wait(15)
        if code != 0:
            raise AssertionError(f"{user} could not register (sipp exit {code})\n{run.errors()}")

    def phone(self, user: str, password: str, answer: Answer | None = None) -> Phone:
        """An agent's softphone: registered, then answering every call as told."""
        port = free_port()
        self.register(user, password, port)
        phone = Phone(self, user, password, port)
        phone.answer_with(answer or Answer())
        return phone

    def listen(self, stem: str, port: int, answer: Answer) -> Sipp:
        name = self._name(stem)
        process = Sipp(
            name, self._common(name, uas_scenario(answer, self.workdir), port), self.workdir
        ).start()
        self.processes.append(process)
        time.sleep(0.2)  # bound before Asterisk's first request
        return process

    def call(
        self, dial: Dial, port: int | None = None, auth: tuple[str, str] | None = None, calls: int = 1
    ) -> Sipp:
        """Place `calls` calls (in a row) from `port` (a trunk caller port, or any for an agent)."""
        name = self._name(f"call-{dial.to.replace('*', 'star')}")
        args = [*self._common(name, uac_scenario(dial, auth is not None, self.workdir), port or free_port())]
        args += ["-m", str(calls), "-l", "1", "-s", dial.to]
        if auth is not None:
            args += ["-au", auth[0], "-ap", auth[1]]
        process = Sipp(name, args, self.workdir).start()
        self.processes.append(process)
        return process

    def answer_pstn(self, port: int, answer: Answer) -> None:
        """Change how the far end of the trunk answers calls out (same port: the trunk's contact)."""
        if self.pstn is not None:
            self.pstn.stop()
            time.sleep(0.05)
        self.pstn = self.listen("pstn", port, answer)

    def close(self) -> None:
        for process in self.processes:
            process.stop()


@dataclass
class Phone:
    lab: SipLab
    user: str
    password: str
    port: int
    process: Sipp | None = None

    def answer_with(self, answer: Answer) -> None:
        """Change how this phone answers from the next call on (same port, same registration)."""
        if self.process is not None:
            self.process.stop()
            time.sleep(0.05)
        self.process = self.lab.listen(f"phone-{self.user}", self.port, answer)

    def dial(self, to: str, **kwargs: object) -> Sipp:
        """A call from this phone (feature code, internal call), authenticated like a softphone."""
        return self.lab.call(Dial(to=to, caller=self.user, **kwargs), auth=(self.user, self.password))  # type: ignore[arg-type]


def codes(processes: Sequence[Sipp], timeout_s: float) -> list[int]:
    return [p.wait(timeout_s) for p in processes]
